// Package boottimer is a one-port device a guest writes to mark a point
// of its boot, as Firecracker's boot timer does: the guest's init writes
// Magic to Port as its first act, and the VMM notes how long the boot
// took from process start. Linux itself never touches the port.
package boottimer

import "sync"

const (
	// Port is free on PCs and on QEMU's microvm, so the same guest runs
	// under both (an unclaimed port ignores the write there).
	Port = 0x440
	Size = 1
	// Magic is the value that marks the start of user space (Firecracker's).
	Magic = 123
)

// Timer reports the first write of Magic to its callback; later writes and
// other values are ignored, so a guest that hammers the port costs nothing.
type Timer struct {
	once    sync.Once
	reached func()
}

// New returns a timer that calls reached once, from the vCPU's thread.
func New(reached func()) *Timer { return &Timer{reached: reached} }

// Read returns zeros: the port holds no state a guest could read.
func (*Timer) Read(_ uint64, data []byte) { clear(data) }

// Write notes a single-byte write of Magic.
func (t *Timer) Write(_ uint64, data []byte) {
	if len(data) == 1 && data[0] == Magic {
		t.once.Do(t.reached)
	}
}
