package p9

import (
	"context"
	"encoding/binary"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

const (
	ringBase = 0x1000
	waitFor  = 10 * time.Second
)

// rig is a share driven through a real queue by a mock driver: each
// message is one chain, a readable buffer and a writable one of room
// bytes, as 9pnet_virtio posts them.
type rig struct {
	t    *testing.T
	dev  *Device
	drv  *virtiotest.Driver
	irq  *virtiotest.Interrupt
	room uint32

	mu      sync.Mutex // the driver
	waiting map[uint16]waiter
	kick    chan struct{}
	stop    context.CancelFunc
	done    sync.WaitGroup
}

// newRig serves dir; memSize bounds the bytes of all messages and answers
// the rig will post, which its driver never reuses.
func newRig(t *testing.T, dir string, readOnly bool, room uint32, memSize int) *rig {
	t.Helper()
	return newRigWith(t, dir, readOnly, room, memSize, nil)
}

// newRigWith is newRig with before called on the device before its
// activation, as a restore loads the device's state.
func newRigWith(t *testing.T, dir string, readOnly bool, room uint32, memSize int, before func(*Device)) *rig {
	t.Helper()
	dev, err := New(dir, Options{Tag: "t", ReadOnly: readOnly})
	require.NoError(t, err)
	if before != nil {
		before(dev)
	}
	mem := virtiotest.NewMemory(memSize)
	drv := virtiotest.NewDriver(mem, QueueSize, ringBase)
	irq := virtiotest.NewInterrupt()
	q, err := queue.New(mem, drv.Config(false, false), irq)
	require.NoError(t, err)
	require.NoError(t, dev.Activate(virtio.Activation{Mem: mem, Queues: []*queue.Queue{q}}))
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{t: t, dev: dev, drv: drv, irq: irq, room: room, waiting: map[uint16]waiter{},
		kick: make(chan struct{}, 1), stop: cancel}
	r.done.Add(2)
	go func() { // the queue's worker, as the transport runs it
		defer r.done.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.kick:
				if err := dev.Process(ctx, 0); err != nil {
					t.Errorf("Process: %v", err)
					return
				}
			}
		}
	}()
	go func() { // the driver's interrupt handler
		defer r.done.Done()
		for ctx.Err() == nil {
			irq.Wait(50 * time.Millisecond)
			r.reap()
		}
	}()
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	r.stop()
	r.done.Wait()
	r.dev.Reset()
	require.NoError(r.t, r.dev.Close())
}

// waiter is a posted chain: where its answer goes (buffers at addrs of
// sizes) and who waits for it.
type waiter struct {
	addrs []memory.GuestAddress
	sizes []uint32
	ch    chan []byte
}

// reap hands each used chain's answer to its waiter.
func (r *rig) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.drv.Used() {
		w, ok := r.waiting[uint16(u.ID)]
		if !ok {
			r.t.Errorf("the device returned chain %d, which was not posted", u.ID)
			continue
		}
		delete(r.waiting, uint16(u.ID))
		var answer []byte
		for i, left := 0, int(u.Len); left > 0 && i < len(w.addrs); i++ {
			n := min(left, int(w.sizes[i]))
			answer = append(answer, r.drv.Read(w.addrs[i], n)...)
			left -= n
		}
		w.ch <- answer
	}
}

// submit posts msg and returns where its answer will arrive.
func (r *rig) submit(msg []byte) <-chan []byte {
	return r.submitInto(msg, r.room)
}

// submitInto posts msg with writable buffers of sizes for the answer, as
// 9pnet_virtio posts a large read: the header's 11 bytes, then the pages.
func (r *rig) submitInto(msg []byte, sizes ...uint32) <-chan []byte {
	r.mu.Lock()
	bufs := []virtiotest.Buf{{Data: msg}}
	for _, n := range sizes {
		bufs = append(bufs, virtiotest.Buf{Len: n, Write: true})
	}
	head, addrs := r.drv.AddChain(bufs)
	ch := make(chan []byte, 1)
	r.waiting[head] = waiter{addrs: addrs[1:], sizes: sizes, ch: ch}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return ch
}

// roundTrip sends one message and waits for its answer.
func (r *rig) roundTrip(msg []byte) []byte {
	r.t.Helper()
	select {
	case resp := <-r.submit(msg):
		return resp
	case <-time.After(waitFor):
		r.t.Fatalf("no answer to a message of type %d in %s", msg[4], waitFor)
		return nil
	}
}

// conn is the rig as the p9 client's connection: what it writes is cut
// into messages, each sent as a chain; answers come back in order of
// completion.
type conn struct {
	r       *rig
	pending []byte
	answers *io.PipeReader
	w       *io.PipeWriter
	wmu     sync.Mutex
}

func (r *rig) conn() *conn {
	pr, pw := io.Pipe()
	return &conn{r: r, answers: pr, w: pw}
}

func (c *conn) Write(b []byte) (int, error) {
	c.pending = append(c.pending, b...)
	for len(c.pending) >= HeaderSize {
		size := int(binary.LittleEndian.Uint32(c.pending))
		if len(c.pending) < size {
			break
		}
		ch := c.r.submit(append([]byte(nil), c.pending[:size]...))
		c.pending = c.pending[size:]
		go func() {
			resp := <-ch
			c.wmu.Lock()
			defer c.wmu.Unlock()
			_, _ = c.w.Write(resp)
		}()
	}
	return len(b), nil
}

func (c *conn) Read(b []byte) (int, error) { return c.answers.Read(b) }

func (c *conn) Close() error { return c.w.Close() }

// lerrno returns the errno of an Rlerror, or 0 for any other answer.
func lerrno(resp []byte) uint32 {
	if len(resp) < HeaderSize+4 || resp[4] != msgRlerror {
		return 0
	}
	return binary.LittleEndian.Uint32(resp[HeaderSize:])
}
