package net

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// rxLoop is the rx queue's thread and the chains it holds. It alone
// touches the rx queue. It waits for frames in poll(2) on the TAP and
// its wake eventfd, so the kernel wakes it directly, as the queues'
// doorbells wake their workers; it then reads every frame the TAP holds
// into the guest's buffers before it waits again.
type rxLoop struct {
	d    *Device
	q    *queue.Queue
	mem  *memory.Memory
	mrg  bool // VIRTIO_NET_F_MRG_RXBUF: a frame may span chains
	need int  // bytes of buffer a largest frame the guest accepts needs

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	// wake is signalled when the guest posted rx buffers and at stop.
	wake   *kvm.EventFD
	wakeRC syscall.RawConn

	errMu sync.Mutex
	err   error // the driver broke the protocol

	c      queue.Chain
	held   []rxChain  // popped, not yet used, in ring order
	spare  [][][]byte // buffer lists of used chains, for the next ones
	iovs   [][]byte
	pushed int // chains used since the last interrupt
}

// rxChain is a popped rx chain resolved to guest memory.
type rxChain struct {
	head uint16
	bufs [][]byte
	size int
}

func (d *Device) startRx(q *queue.Queue) (*rxLoop, error) {
	wake, err := kvm.NewBlockingEventFD()
	if err != nil {
		return nil, err
	}
	rc, err := wake.SyscallConn()
	if err != nil {
		wake.Close()
		return nil, err
	}
	l := &rxLoop{
		d: d, q: q, mem: d.mem, mrg: d.features&FeatureMrgRxBuf != 0,
		done: make(chan struct{}), wake: wake, wakeRC: rc,
	}
	l.need = smallFrame
	if d.features&(FeatureGuestTSO4|FeatureGuestTSO6) != 0 {
		l.need = MaxFrame
	}
	if l.mrg {
		// The TAP may hold a GSO frame from before the offloads changed.
		l.need = MaxFrame
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	go l.run()
	return l, nil
}

// notified handles the guest's rx notification.
func (l *rxLoop) notified() error {
	l.errMu.Lock()
	err := l.err
	l.errMu.Unlock()
	if err != nil {
		return err
	}
	return l.wake.Signal()
}

// stop ends the thread, waking it from its wait. The chains it holds go
// back with the reset ring.
func (l *rxLoop) stop() {
	l.cancel()
	if err := l.wake.Signal(); err != nil {
		l.d.log.Error("waking the rx thread", "err", err)
	}
	<-l.done
	if err := l.wake.Close(); err != nil {
		l.d.log.Error("closing the rx thread's eventfd", "err", err)
	}
}

// fail records a protocol error and has the queue's worker report it,
// which marks the device NEEDS_RESET.
func (l *rxLoop) fail(err error) {
	l.errMu.Lock()
	l.err = err
	l.errMu.Unlock()
	l.d.kick(RxQueue)
}

func (l *rxLoop) run() {
	defer close(l.done)
	defer l.signal()
	for l.ctx.Err() == nil {
		if err := l.fill(); err != nil {
			l.fail(err)
			return
		}
		if !l.ready() {
			// No room for a frame: stop reading the TAP until the
			// guest posts buffers; frames wait in the TAP's queue.
			l.signal()
			if _, err := l.wake.Wait(); err != nil {
				l.d.log.Error("rx thread's eventfd: the device receives no more", "err", err)
				return
			}
			continue
		}
		capacity := l.iovecs()
		n, err := l.d.tap.readv(l.iovs)
		switch {
		case errors.Is(err, unix.EAGAIN):
			// The TAP drained: the chains used so far reach the guest
			// before the wait.
			l.signal()
			if err := l.waitTap(); err != nil {
				l.d.log.Error("waiting for the TAP: the device receives no more", "err", err)
				return
			}
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err == nil && n == 0:
			err = errors.New("end of file")
			fallthrough
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
		// At once, not when the TAP drained: the guest takes this frame
		// while the next is read. used_event spares it the interrupts
		// it does not want: once woken, its driver polls the ring with
		// interrupts off until it finds it empty.
		l.signal()
		if wait := l.d.rxLimit.Take(n - HeaderSize); wait > 0 {
			ratelimit.Sleep(l.ctx, wait, l.d.rxWake)
		}
	}
}

// waitTap waits until the TAP has a frame or the wake eventfd was
// signalled, whose count it then takes.
func (l *rxLoop) waitTap() error {
	readable, err := l.d.tap.waitReadable(l.wakeRC)
	if err != nil || readable {
		return err
	}
	_, err = l.wake.Wait()
	return err
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
	bufs, size, err := guestIovecs(l.mem, l.c.Writable, bufs)
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
