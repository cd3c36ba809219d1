package net

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/internal/iov"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// rxLoop is the rx queue's goroutine and the chains it holds. It alone
// touches the rx queue.
type rxLoop struct {
	d    *Device
	q    *queue.Queue
	kick func(int) // the activation's, which Reset clears on the device
	mem  *memory.Memory
	mrg  bool // VIRTIO_NET_F_MRG_RXBUF: a frame may span chains
	need int  // bytes of buffer a largest frame the guest accepts needs

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{} // the guest posted rx buffers
	parked chan struct{} // received by park once the loop holds still

	errMu sync.Mutex
	err   error // the driver broke the protocol

	c      queue.Chain
	held   []rxChain  // popped, not yet used, in ring order
	spare  [][][]byte // buffer lists of used chains, for the next ones
	iovs   [][]byte
	pushed int // chains used since the last interrupt
	// signalFn is signal as a func value made once, not per read.
	signalFn func()
}

// rxChain is a popped rx chain resolved to guest memory.
type rxChain struct {
	head uint16
	bufs [][]byte
	size int
}

func (d *Device) startRx(q *queue.Queue) *rxLoop {
	l := &rxLoop{
		d: d, q: q, kick: d.kick, mem: d.mem, mrg: d.features&FeatureMrgRxBuf != 0,
		done: make(chan struct{}), wake: make(chan struct{}, 1), parked: make(chan struct{}),
	}
	l.need = smallFrame
	if d.features&(FeatureGuestTSO4|FeatureGuestTSO6) != 0 {
		l.need = MaxFrame
	}
	if l.mrg {
		// The TAP may hold a GSO frame from before the offloads changed.
		l.need = MaxFrame
	}
	l.signalFn = l.signal
	l.ctx, l.cancel = context.WithCancel(context.Background())
	go l.run()
	return l
}

// notified handles the guest's rx notification.
func (l *rxLoop) notified() error {
	l.errMu.Lock()
	err := l.err
	l.errMu.Unlock()
	if err != nil {
		return err
	}
	poke(l.wake)
	return nil
}

// stop ends the goroutine, interrupting a read it waits in. The chains
// it holds go back with the reset ring.
func (l *rxLoop) stop() {
	l.cancel()
	if err := l.d.tap.interruptReads(); err != nil {
		l.d.log.Error("interrupting the TAP's reads", "err", err)
	}
	<-l.done
	if err := l.d.tap.resumeReads(); err != nil {
		l.d.log.Error("resuming the TAP's reads", "err", err)
	}
}

// park stops the goroutine at the top of its loop, for Quiesce, which
// set the device's hold: it interrupts a TAP read or a wait and returns
// once the loop holds still (or ended), with every chain it used
// signalled to the driver.
func (l *rxLoop) park() error {
	if err := l.d.tap.interruptReads(); err != nil {
		return fmt.Errorf("virtio-net: interrupting the TAP's reads: %w", err)
	}
	poke(l.wake)
	poke(l.d.rxWake)
	select {
	case <-l.parked:
	case <-l.done:
	}
	return nil
}

// wait holds the loop while the device is quiesced; it reports false if
// the loop must end.
func (l *rxLoop) wait(hold chan struct{}) bool {
	l.signal()
	for parked := l.parked; ; {
		select {
		case parked <- struct{}{}:
			parked = nil // told park; now wait for Release
		case <-hold:
			return true
		case <-l.ctx.Done():
			return false
		}
	}
}

// fail records a protocol error and has the queue's worker report it,
// which marks the device NEEDS_RESET.
func (l *rxLoop) fail(err error) {
	l.errMu.Lock()
	l.err = err
	l.errMu.Unlock()
	l.kick(RxQueue)
}

func (l *rxLoop) run() {
	defer close(l.done)
	defer l.signal()
	for l.ctx.Err() == nil {
		if l.d.quiesced.Load() { // no lock per frame
			if hold := l.d.holding(); hold != nil && !l.wait(hold) {
				return
			}
			continue
		}
		if err := l.fill(); err != nil {
			l.fail(err)
			return
		}
		if !l.ready() {
			// No room for a frame: stop reading the TAP until the
			// guest posts buffers.
			l.signal()
			select {
			case <-l.ctx.Done():
				return
			case <-l.wake:
			}
			continue
		}
		capacity := l.iovecs()
		// The TAP drained: chains fill gave back unused reach the
		// guest before the wait.
		n, err := l.d.tap.readv(l.iovs, l.signalFn)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded) && l.ctx.Err() == nil:
			continue // interrupted by park
		case closedErr(err):
			return
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			// Not the guest's doing (the TAP went away, say): stop
			// receiving rather than retry in a loop.
			l.d.log.Error("reading the TAP: the device receives no more", "err", err)
			return
		}
		if err := l.deliver(n, capacity); err != nil {
			l.fail(err)
			return
		}
		// At once, not per batch: the guest takes this frame while
		// the next is read. used_event spares it the interrupts it
		// does not want.
		l.signal()
		if wait := l.d.rxLimit.Take(n - HeaderSize); wait > 0 {
			ratelimit.Sleep(l.ctx, wait, l.d.rxWake)
		}
	}
}

// signal interrupts the driver for the chains used since the last time.
func (l *rxLoop) signal() {
	if l.pushed == 0 {
		return
	}
	l.pushed = 0
	if err := l.q.SignalUsed(); err != nil {
		l.d.log.Error("virtio-net rx interrupt", "err", err)
	}
}

func (l *rxLoop) capacity() int {
	n := 0
	for _, c := range l.held {
		n += c.size
	}
	return n
}

// ready reports whether the held chains can take a largest frame; a
// guest whose whole ring cannot gets what fits, the rest dropped.
func (l *rxLoop) ready() bool {
	if !l.mrg {
		return len(l.held) > 0
	}
	return l.capacity() >= l.need || len(l.held) == int(l.q.Size())
}

// fill pops chains until a largest frame fits or the ring is empty.
// Chains no frame can use go back at once, unwritten.
func (l *rxLoop) fill() error {
	for !l.ready() && len(l.held) < int(l.q.Size()) {
		ok, err := l.q.Pop(&l.c)
		if err != nil || !ok {
			return err
		}
		c, err := l.resolve()
		if err != nil {
			l.d.stats.rxDropped.Add(1)
			l.d.glog.Warn("unusable rx chain returned unused", "head", l.c.Head, "err", err)
			if err := l.q.Push(l.c.Head, 0); err != nil {
				return err
			}
			l.pushed++
			continue
		}
		l.held = append(l.held, c)
	}
	return nil
}

// Errors of rx chains the device returns unused.
var (
	errRxReadable = errors.New("rx chain with device-readable buffers")
	errRxShort    = errors.New("rx chain too short")
)

// resolve checks the popped chain and maps its buffers.
func (l *rxLoop) resolve() (rxChain, error) {
	if len(l.c.Readable) > 0 {
		return rxChain{}, errRxReadable
	}
	var bufs [][]byte
	if n := len(l.spare); n > 0 {
		bufs, l.spare = l.spare[n-1], l.spare[:n-1]
	}
	bufs, size, err := iov.Append(bufs, l.mem, l.c.Writable)
	if err != nil {
		l.spare = append(l.spare, bufs[:0])
		return rxChain{}, err
	}
	least := HeaderSize
	if !l.mrg {
		least = l.need
	}
	if size < least {
		l.spare = append(l.spare, bufs[:0])
		return rxChain{}, errRxShort
	}
	return rxChain{head: l.c.Head, bufs: bufs, size: size}, nil
}

// iovecs lays out the held chains for one read and returns their room.
func (l *rxLoop) iovecs() int {
	l.iovs = l.iovs[:0]
	room := 0
	for _, c := range l.held {
		if room >= l.need || len(l.iovs)+len(c.bufs) > maxIovs {
			break
		}
		l.iovs = append(l.iovs, c.bufs...)
		room += c.size
		if !l.mrg {
			break
		}
	}
	return room
}

// deliver hands a frame of n bytes, header included, to the guest in
// the chains it filled, and sets num_buffers to their count.
func (l *rxLoop) deliver(n, room int) error {
	// A frame larger than the buffers came truncated (the TAP reports
	// its whole length, a socket what fit): drop it and keep the chains
	// for the next.
	if n < HeaderSize || n > room || (n == room && room < l.need) {
		l.d.stats.rxDropped.Add(1)
		l.d.glog.Warn("rx frame larger than the guest's buffers dropped", "bytes", n, "room", room)
		return nil
	}
	k, left := 0, n
	for left > 0 {
		left -= min(left, l.held[k].size)
		k++
	}
	var nb [2]byte
	binary.LittleEndian.PutUint16(nb[:], uint16(k))
	putAt(l.held[0].bufs, hdrNumBuffers, nb[:])
	left = n
	for _, c := range l.held[:k] {
		used := min(left, c.size)
		left -= used
		if err := l.q.Push(c.head, uint32(used)); err != nil {
			return err
		}
		l.spare = append(l.spare, c.bufs[:0])
	}
	l.held = l.held[:copy(l.held, l.held[k:])]
	l.pushed += k
	l.d.stats.rxFrames.Add(1)
	l.d.stats.rxBytes.Add(uint64(n - HeaderSize))
	return nil
}

// putAt writes p at offset off of the concatenation of bufs.
func putAt(bufs [][]byte, off int, p []byte) {
	for _, b := range bufs {
		if off >= len(b) {
			off -= len(b)
			continue
		}
		c := copy(b[off:], p)
		p, off = p[c:], 0
		if len(p) == 0 {
			return
		}
	}
}
