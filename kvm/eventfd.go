package kvm

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// EventFD is an eventfd(2) counter, the doorbell behind IRQFD and
// IOEventFD. One from NewEventFD is non-blocking underneath and
// registered with the Go poller, so Wait parks only its goroutine and
// honours SetReadDeadline; one from NewBlockingEventFD is not.
type EventFD struct {
	f  *os.File
	rc syscall.RawConn
}

// eventfdValueSize is the size of an eventfd read or write: one __u64.
const eventfdValueSize = 8

// NewEventFD creates an eventfd with a zero count.
func NewEventFD() (*EventFD, error) { return newEventFD(unix.EFD_NONBLOCK) }

// NewBlockingEventFD creates an eventfd whose Wait blocks its OS thread
// in read(2) until the count is non-zero: the kernel wakes that thread
// itself, with no poller thread and goroutine handoff in between, which
// is what a thread serving one doorbell wants. It has no read deadline;
// a Signal ends a Wait, and Close takes effect once the Wait returns.
func NewBlockingEventFD() (*EventFD, error) { return newEventFD(0) }

func newEventFD(flags int) (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|flags)
	if err != nil {
		return nil, fmt.Errorf("kvm: eventfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "eventfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("kvm: eventfd: %w", err)
	}
	return &EventFD{f: f, rc: rc}, nil
}

// Signal adds 1 to the count, waking a waiter (or the kernel's irqfd).
func (e *EventFD) Signal() error {
	var b [eventfdValueSize]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	if _, err := e.f.Write(b[:]); err != nil {
		return fmt.Errorf("kvm: signalling eventfd: %w", err)
	}
	return nil
}

// Wait blocks until the count is non-zero, then returns it and resets it
// to zero. With a read deadline set, it fails with os.ErrDeadlineExceeded
// once the deadline passes.
func (e *EventFD) Wait() (uint64, error) {
	var b [eventfdValueSize]byte
	if _, err := e.f.Read(b[:]); err != nil {
		return 0, fmt.Errorf("kvm: waiting on eventfd: %w", err)
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

// SetReadDeadline bounds the current and future Waits; zero means none.
func (e *EventFD) SetReadDeadline(t time.Time) error { return e.f.SetReadDeadline(t) }

// Close closes the eventfd. Deassign an ioeventfd first: KVM holds its own
// reference and keeps it registered otherwise (an irqfd goes away with
// the eventfd).
func (e *EventFD) Close() error { return e.f.Close() }

// withFD runs fn with the descriptor held open, for the ioctls that pass
// it to KVM.
func (e *EventFD) withFD(fn func(fd int32) error) error {
	var ferr error
	if err := e.rc.Control(func(fd uintptr) { ferr = fn(int32(fd)) }); err != nil {
		return fmt.Errorf("kvm: eventfd: %w", err)
	}
	return ferr
}
