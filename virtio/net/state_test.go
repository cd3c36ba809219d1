package net

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

// restoreRig builds a second device on r's guest memory and a new TAP,
// as a restore in a new process does, and loads s and ts into it; the
// driver's queues stay r's, as in the guest.
func restoreRig(t *testing.T, r *rig, s State, ts virtio.PCIState) (*rig, error) {
	t.Helper()
	n := newDevice(t, r.mem, Limits{})
	n.drv.Queues = r.drv.Queues
	if err := n.d.Restore(s); err != nil {
		return n, err
	}
	return n, n.fn.Restore(ts)
}

// TestStateRoundTrip: a snapshot of a running device restored onto
// another TAP keeps the MAC and limits, applies the driver's offloads to
// the new TAP, takes again the rx chain the old device held unused, and
// moves frames both ways.
func TestStateRoundTrip(t *testing.T) {
	limits := Limits{TX: Limit{Packets: ratelimit.Bucket{Rate: 1000, Burst: 100}}}
	r := newRig(t, linuxFeatures, limits)
	rxq := r.drv.Queues[RxQueue]
	// Room for a largest frame after the first: the device reads the TAP
	// only with that much.
	var heads []uint16
	for range 18 {
		h, _ := rxq.AddChain([]virtiotest.Buf{{Len: 4096, Write: true}})
		heads = append(heads, h)
	}
	first, held := heads[0], heads[1]
	r.drv.Kick(RxQueue)
	r.inject(t, frame([HeaderSize]byte{}, pattern(100, 1)))
	u := r.rxUsed(t, 1)
	require.Equal(t, uint32(first), u[0].ID)
	// The device holds the other chains, popped and unused.
	require.NoError(t, r.d.Quiesce())
	s, ts := r.d.State(), r.fn.State()
	assert.Equal(t, State{MAC: [6]byte{0x52, 0x54, 0, 1, 2, 3}, Limits: limits}, s)
	r.fn.Reset() // the old process is gone

	s.MAC = [6]byte{0x52, 0x54, 0, 9, 9, 9} // a clone's own, say: restored as saved
	n, err := restoreRig(t, r, s, ts)
	require.NoError(t, err)
	assert.Equal(t, s, n.d.State())
	assert.Equal(t, uint64(9), n.drv.ReadDeviceConfig(cfgMAC+5, 1), "the MAC the driver reads")
	n.mu.Lock()
	assert.Equal(t, []int{tunFCSUM | tunFTSO4 | tunFTSO6}, n.offloads, "the driver's offloads on the new TAP")
	n.mu.Unlock()

	n.inject(t, frame([HeaderSize]byte{}, pattern(200, 2)))
	u = n.rxUsed(t, 1)
	require.Equal(t, uint32(held), u[0].ID, "the chain the old device held is taken again")
	assert.Equal(t, pattern(200, 2), n.readRx(u[0])[HeaderSize:])

	n.send(t, virtiotest.Buf{Data: frame([HeaderSize]byte{}, pattern(300, 3))})
	assert.Equal(t, frame([HeaderSize]byte{}, pattern(300, 3)), n.recvPeer(t))
	r.peerQuiet(t)
}

func TestRestoreRejects(t *testing.T) {
	for name, s := range map[string]State{
		"zero MAC":      {},
		"multicast MAC": {MAC: [6]byte{0x01, 0, 0x5e, 0, 0, 1}},
		"byte burst below a frame": {MAC: [6]byte{0x52, 0, 0, 0, 0, 1},
			Limits: Limits{RX: Limit{Bytes: ratelimit.Bucket{Rate: 1000, Burst: 1000}}}},
	} {
		t.Run(name, func(t *testing.T) {
			r := newDevice(t, virtiotest.NewMemory(ramSize), Limits{})
			before := r.d.State()
			assert.ErrorIs(t, r.d.Restore(s), devices.ErrBadState)
			assert.Equal(t, before, r.d.State(), "a refused state changes nothing")
		})
	}
}

// TestQuiesce: a quiesced device neither reads the TAP nor takes tx
// chains; Release delivers what waited, both ways.
func TestQuiesce(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{})
	r.postRx(32, 4096)
	require.NoError(t, r.d.Quiesce())
	assert.ErrorIs(t, r.d.Quiesce(), ErrQuiesced)

	r.inject(t, frame([HeaderSize]byte{}, pattern(100, 1)))
	txq := r.drv.Queues[TxQueue]
	txq.AddChain([]virtiotest.Buf{{Data: frame([HeaderSize]byte{}, pattern(60, 2))}})
	r.drv.Kick(TxQueue)
	time.Sleep(quiet)
	assert.Empty(t, r.drv.Queues[RxQueue].Used(), "rx while quiesced")
	assert.Empty(t, txq.Used(), "tx while quiesced")
	r.peerQuiet(t)

	r.d.Release()
	r.d.Release() // a second does nothing
	u := r.rxUsed(t, 1)
	assert.Equal(t, pattern(100, 1), r.readRx(u[0])[HeaderSize:])
	assert.Equal(t, frame([HeaderSize]byte{}, pattern(60, 2)), r.recvPeer(t))

	// A device the driver reset while quiesced is released as well.
	require.NoError(t, r.d.Quiesce())
	r.drv.SetStatus(0)
	r.d.Release()
}
