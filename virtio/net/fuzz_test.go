package net

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

// fuzzBufs cuts up to four buffers from the input's bytes: sizes up to
// a largest frame and past it, writable or readable as the bits say.
func fuzzBufs(a, b, c byte, writable bool) []virtiotest.Buf {
	n := 1 + int(a%4)
	bufs := make([]virtiotest.Buf, n)
	for i := range bufs {
		size := (int(b)<<8 | int(c)) * (i + 1) % (MaxFrame + 64)
		if size == 0 {
			size = int(c % HeaderSize)
		}
		w := writable != (a&(0x10<<i) != 0) // a few buffers the other way
		if w {
			bufs[i] = virtiotest.Buf{Len: uint32(size), Write: true}
		} else {
			bufs[i] = virtiotest.Buf{Data: make([]byte, size)}
		}
	}
	return bufs
}

// FuzzDevice drives the device with up to 32 operations of four input
// bytes each: rx chains posted, frames arriving on the TAP, tx chains
// sent, of every size and layout, malformed ones included. The device
// must not panic or hang, never write more into an rx chain than it
// holds, and hand the TAP only frames of a header to a largest frame.
func FuzzDevice(f *testing.F) {
	f.Add([]byte{0, 3, 0x10, 0, 1, 0, 1, 0, 2, 0, 0, 100})
	f.Add([]byte{0, 0, 0, 5, 1, 0xff, 0xff, 0, 2, 0x13, 0x40, 0})
	f.Add([]byte{2, 0x20, 0, 11, 2, 0, 0xff, 0xff, 1, 0, 0, 0, 0, 0x90, 0, 64})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newRig(t, linuxFeatures, Limits{})
		rxq, txq := r.drv.Queues[RxQueue], r.drv.Queues[TxQueue]
		room := map[uint32]uint32{}
		for i := 0; len(data) >= 4 && i < 32; i, data = i+1, data[4:] {
			op, a, b, c := data[0]%3, data[1], data[2], data[3]
			switch op {
			case 0:
				bufs := fuzzBufs(a, b, c, true)
				head, _ := rxq.AddChain(bufs)
				room[uint32(head)] = 0
				for _, buf := range bufs {
					room[uint32(head)] += buf.Len
				}
				r.drv.Kick(RxQueue)
			case 1:
				// A full socket refuses the frame, as a full TAP queue drops it.
				_, _ = r.peer.Write(make([]byte, (int(a)<<8|int(b))*int(c%8+1)%(MaxFrame+64)))
			case 2:
				head, _ := txq.AddChain(fuzzBufs(a, b, c, false))
				r.drv.Kick(TxQueue)
				if !awaitUsed(t, r, head) {
					return // a chain the queue refuses: the device needs a reset
				}
			}
		}
		time.Sleep(time.Millisecond)
		for _, u := range rxq.Used() {
			require.LessOrEqual(t, u.Len, room[u.ID], "rx chain %d", u.ID)
		}
		require.NoError(t, r.peer.SetReadDeadline(time.Now()))
		buf := make([]byte, MaxFrame+128)
		for {
			n, err := r.peer.Read(buf)
			if err != nil {
				break
			}
			require.GreaterOrEqual(t, n, HeaderSize)
			require.LessOrEqual(t, n, MaxFrame)
		}
	})
}

// awaitUsed waits for the device to complete tx chain head, or to
// refuse the queue as broken.
func awaitUsed(t *testing.T, r *rig, head uint16) bool {
	q := r.drv.Queues[TxQueue]
	for deadline := time.Now().Add(waitFor); ; time.Sleep(50 * time.Microsecond) {
		for _, u := range q.Used() {
			if u.ID == uint32(head) {
				return true
			}
		}
		if r.drv.Status()&virtio.StatusNeedsReset != 0 {
			return false
		}
		require.True(t, time.Now().Before(deadline), "tx chain %d neither completed nor refused", head)
	}
}

// FuzzRestore loads hostile device and transport states, as a damaged or
// forged snapshot would carry, into a device on a fresh TAP: the restore
// must refuse them with ErrBadState, or restore a device that then moves
// a frame each way or is refused by its queues as broken, never panic.
func FuzzRestore(f *testing.F) {
	r := newRig(f, linuxFeatures, Limits{})
	r.postRx(18, 4096)
	seed := func(edit func(*restoreInput)) {
		in := restoreInput{Net: r.d.State(), Transport: r.fn.State()}
		if edit != nil {
			edit(&in)
		}
		b, err := json.Marshal(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(nil)
	seed(func(in *restoreInput) { in.Net.MAC[0] = 1 })
	seed(func(in *restoreInput) { in.Net.Limits.RX.Bytes = ratelimit.Bucket{Rate: 1, Burst: 1} })
	seed(func(in *restoreInput) { in.Transport.Queues[RxQueue].Driver = ramSize })
	seed(func(in *restoreInput) { in.Transport.DriverFeatures |= 1 << 40 })
	f.Fuzz(func(t *testing.T, data []byte) {
		var in restoreInput
		if json.Unmarshal(data, &in) != nil {
			return
		}
		n := newDevice(t, r.mem, Limits{})
		err := n.d.Restore(in.Net)
		if err == nil {
			err = n.fn.Restore(in.Transport)
		}
		if err != nil {
			require.ErrorIs(t, err, devices.ErrBadState)
			return
		}
		// Whatever was restored must not read or write outside guest
		// memory: a frame each way at most makes the queues fail.
		_, _ = n.peer.Write(frame([HeaderSize]byte{}, pattern(100, 1)))
		n.drv.Kick(TxQueue)
		time.Sleep(time.Millisecond)
	})
}

// restoreInput is what FuzzRestore decodes: a device's state and its
// transport's.
type restoreInput struct {
	Net       State
	Transport virtio.PCIState
}
