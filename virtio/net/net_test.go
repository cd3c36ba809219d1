package net

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

const linuxFeatures = FeatureCSUM | FeatureGuestCSUM | FeatureMAC | FeatureGuestTSO4 | FeatureGuestTSO6 |
	FeatureHostTSO4 | FeatureHostTSO6 | FeatureMrgRxBuf | FeatureStatus

func TestConfigSpace(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{})
	assert.Equal(t, uint64(offeredFeatures|virtio.FeatureVersion1|virtio.FeatureIndirectDesc|virtio.FeatureEventIdx), r.drv.DeviceFeatures())
	for i, b := range []byte{0x52, 0x54, 0, 1, 2, 3} {
		assert.Equal(t, uint64(b), r.drv.ReadDeviceConfig(uint64(i), 1), "mac[%d]", i)
	}
	assert.Equal(t, uint64(statusLinkUp), r.drv.ReadDeviceConfig(cfgStatus, 2))
	assert.Equal(t, uint64(1), r.drv.ReadDeviceConfig(cfgMaxVQPairs, 2))
	assert.Equal(t, uint64(0), r.drv.ReadDeviceConfig(configSize, 4), "past the end")
}

func TestOffloadsFollowFeatures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		want     int
	}{
		{"none", 0, 0},
		{"csum", FeatureGuestCSUM, tunFCSUM},
		{"tso", FeatureGuestCSUM | FeatureGuestTSO4 | FeatureGuestTSO6, tunFCSUM | tunFTSO4 | tunFTSO6},
		{"tso without csum", FeatureGuestTSO4, 0},
		{"host side only", FeatureCSUM | FeatureHostTSO4, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.features, Limits{})
			r.drv.SetStatus(0)
			r.mu.Lock()
			defer r.mu.Unlock()
			require.GreaterOrEqual(t, len(r.offloads), 2)
			assert.Equal(t, []int{tc.want, 0}, r.offloads[len(r.offloads)-2:], "activation, then reset")
		})
	}
}

func TestRxMergeable(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{})
	const bufSize = 4096
	r.postRx(32, bufSize) // 128 KiB: room for a largest frame
	var hdr [HeaderSize]byte
	hdr[0] = 1 // NEEDS_CSUM: passed through as the TAP wrote it
	payload := pattern(10000, 3)
	r.inject(t, frame(hdr, payload))
	used := r.rxUsed(t, 3)
	total := uint32(0)
	var got []byte
	for i, u := range used {
		total += u.Len
		if i < 2 {
			assert.Equal(t, uint32(bufSize), u.Len)
		}
		got = append(got, r.readRx(u)...)
	}
	require.Equal(t, uint32(HeaderSize+len(payload)), total)
	assert.Equal(t, byte(1), got[0])
	assert.Equal(t, uint16(3), binary.LittleEndian.Uint16(got[hdrNumBuffers:]), "num_buffers")
	assert.Equal(t, payload, got[HeaderSize:])

	small := pattern(60, 9)
	r.inject(t, frame([HeaderSize]byte{}, small))
	u := r.rxUsed(t, 1)[0]
	got = r.readRx(u)
	assert.Equal(t, uint16(1), binary.LittleEndian.Uint16(got[hdrNumBuffers:]))
	assert.Equal(t, small, got[HeaderSize:])
	s := r.d.Stats()
	assert.Equal(t, Stats{RxFrames: 2, RxBytes: uint64(len(payload) + len(small))}, s)
}

// readRx returns the bytes the device wrote to a used rx chain of one
// buffer.
func (r *rig) readRx(u virtiotest.Used) []byte {
	q := r.drv.Queues[RxQueue]
	addr, err := r.mem.Uint64(q.Desc + memory.GuestAddress(16*u.ID))
	if err != nil {
		panic(err)
	}
	return q.Read(memory.GuestAddress(addr), int(u.Len))
}

func TestRxWithoutMergeable(t *testing.T) {
	r := newRig(t, FeatureMAC, Limits{})
	r.postRx(1, 100) // smaller than an MTU frame: returned unused
	u := r.rxUsed(t, 1)[0]
	assert.Equal(t, uint32(0), u.Len)
	r.postRx(1, smallFrame)
	payload := pattern(1514, 1)
	r.inject(t, frame([HeaderSize]byte{}, payload))
	u = r.rxUsed(t, 1)[0]
	got := r.readRx(u)
	assert.Equal(t, uint16(1), binary.LittleEndian.Uint16(got[hdrNumBuffers:]))
	assert.Equal(t, payload, got[HeaderSize:])
	assert.Equal(t, uint64(1), r.d.Stats().RxDropped)
}

// A guest that posts no buffers leaves frames in the TAP: the device
// does not read them, and delivers them once buffers come.
func TestRxWaitsForBuffers(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{})
	for i := range 3 {
		r.inject(t, frame([HeaderSize]byte{}, pattern(100, byte(i))))
	}
	time.Sleep(quiet)
	var pending int
	require.NoError(t, r.peerPending(&pending))
	assert.Positive(t, pending, "the device read the TAP without rx buffers")
	assert.Zero(t, r.d.Stats().RxFrames)
	r.postRx(40, 4096)
	used := r.rxUsed(t, 3)
	for i, u := range used {
		assert.Equal(t, pattern(100, byte(i)), r.readRx(u)[HeaderSize:])
	}
}

func TestRxFrameLargerThanRing(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{})
	// A whole ring of header-sized chains: ready, but no frame fits.
	r.postRx(QueueSize, HeaderSize)
	r.inject(t, frame([HeaderSize]byte{}, pattern(4000, 0)))
	for deadline := time.Now().Add(waitFor); r.d.Stats().RxDropped == 0; time.Sleep(time.Millisecond) {
		require.True(t, time.Now().Before(deadline), "the frame was not dropped")
	}
	assert.Empty(t, r.drv.Queues[RxQueue].Used(), "chains of a dropped frame stay with the device")
}

func TestTx(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{})
	var hdr [HeaderSize]byte
	hdr[1] = 1 // GSO_TCPV4: passed through for the TAP to check
	payload := pattern(3000, 5)
	// Header split across buffers, as a driver may.
	r.send(t, virtiotest.Buf{Data: hdr[:5]}, virtiotest.Buf{Data: append(hdr[5:], payload[:1000]...)}, virtiotest.Buf{Data: payload[1000:]})
	assert.Equal(t, frame(hdr, payload), r.recvPeer(t))
	assert.Equal(t, Stats{TxFrames: 1, TxBytes: uint64(len(payload))}, r.d.Stats())
}

// TestInterruptPerFrame: without EVENT_IDX or NO_INTERRUPT the driver
// wants every used chain signalled, so that its stack goes on with each
// frame while the device moves the next: frames that waited together
// are not held back to one interrupt at the end of their batch.
func TestInterruptPerFrame(t *testing.T) {
	const frames = 3
	var hdr [HeaderSize]byte
	t.Run("tx", func(t *testing.T) {
		r := newRig(t, linuxFeatures, Limits{})
		q := r.drv.Queues[TxQueue]
		for i := range frames {
			q.AddChain([]virtiotest.Buf{{Data: frame(hdr, pattern(100, byte(i)))}})
		}
		r.drv.Kick(TxQueue)
		for i := range frames {
			assert.Equal(t, frame(hdr, pattern(100, byte(i))), r.recvPeer(t))
		}
		require.Eventually(t, func() bool { return r.msi.Count(TxQueue) >= frames }, waitFor, time.Millisecond)
		assert.Equal(t, frames, r.msi.Count(TxQueue))
	})
	t.Run("rx", func(t *testing.T) {
		r := newRig(t, linuxFeatures, Limits{})
		// The frames wait in the TAP before the guest posts buffers, so
		// the device reads them back to back.
		for i := range frames {
			r.inject(t, frame(hdr, pattern(100, byte(i))))
		}
		r.postRx(2*MaxFrame/4096, 4096)
		assert.Len(t, r.rxUsed(t, frames), frames)
		require.Eventually(t, func() bool { return r.msi.Count(RxQueue) >= frames }, waitFor, time.Millisecond)
		time.Sleep(quiet)
		assert.Equal(t, frames, r.msi.Count(RxQueue))
	})
}

func TestTxRefusesMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		bufs []virtiotest.Buf
	}{
		{"shorter than the header", []virtiotest.Buf{{Data: make([]byte, HeaderSize-1)}}},
		{"no readable buffer", []virtiotest.Buf{{Len: 100, Write: true}}},
		{"oversized", []virtiotest.Buf{{Data: make([]byte, MaxFrame)}, {Data: []byte{1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, linuxFeatures, Limits{})
			r.send(t, tc.bufs...)
			r.peerQuiet(t)
			assert.Equal(t, Stats{TxDropped: 1}, r.d.Stats())
			// The device still works.
			r.send(t, virtiotest.Buf{Data: frame([HeaderSize]byte{}, []byte("ok"))})
			assert.Equal(t, frame([HeaderSize]byte{}, []byte("ok")), r.recvPeer(t))
		})
	}
}

func TestRxChainsTheDeviceCannotUse(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{})
	q := r.drv.Queues[RxQueue]
	q.AddChain([]virtiotest.Buf{{Data: make([]byte, 64)}, {Len: 4096, Write: true}}) // device-readable part
	q.AddChain([]virtiotest.Buf{{Len: HeaderSize - 1, Write: true}})                 // shorter than the header
	r.drv.Kick(RxQueue)
	used := r.rxUsed(t, 2)
	for _, u := range used {
		assert.Equal(t, uint32(0), u.Len)
	}
	assert.Equal(t, uint64(2), r.d.Stats().RxDropped)
	assert.Equal(t, uint8(1|2|4|8), r.drv.Status(), "a bad rx chain is not a reason to reset")
}

func TestTxRateLimit(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{TX: Limit{Packets: ratelimit.Bucket{Rate: 20, Burst: 1}}})
	start := time.Now()
	for range 5 {
		r.send(t, virtiotest.Buf{Data: frame([HeaderSize]byte{}, []byte("x"))})
		r.recvPeer(t)
	}
	// One token at once, then one per 50 ms.
	assert.GreaterOrEqual(t, time.Since(start), 190*time.Millisecond)

	require.NoError(t, r.d.SetLimits(Limits{}))
	start = time.Now()
	for range 20 {
		r.send(t, virtiotest.Buf{Data: frame([HeaderSize]byte{}, []byte("x"))})
		r.recvPeer(t)
	}
	assert.Less(t, time.Since(start), 500*time.Millisecond, "limits lifted at run time")
}

func TestRxRateLimit(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{RX: Limit{Bytes: ratelimit.Bucket{Rate: 10 * MaxFrame, Burst: MaxFrame}}})
	r.postRx(128, 4096)
	start := time.Now()
	for range 4 {
		r.inject(t, frame([HeaderSize]byte{}, pattern(MaxFrame/2, 1)))
	}
	r.rxUsed(t, 4*9)
	// The burst takes two frames; the third puts the bucket 50 ms in
	// debt, which the fourth waits out.
	assert.GreaterOrEqual(t, time.Since(start), 45*time.Millisecond)
}

func TestLimitsValidate(t *testing.T) {
	require.ErrorIs(t, Limits{RX: Limit{Bytes: ratelimit.Bucket{Rate: 1000}}}.Validate(), ErrBurstTooSmall)
	require.NoError(t, Limits{RX: Limit{Bytes: ratelimit.Bucket{Rate: 1000, Burst: MaxFrame}}, TX: Limit{Packets: ratelimit.Bucket{Rate: 1}}}.Validate())
}
