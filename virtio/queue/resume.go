package queue

import "github.com/gvmm-dev/gvmm/virtio/internal/ringmem"

// Resume takes up a queue restored from a snapshot where the guest memory
// says it stands: used.idx is the device's count of returned chains, and
// every chain the driver made available after those is taken again. A
// chain the device was executing, or holding (a balloon's statistics
// buffer), when the snapshot was taken is thus executed or held anew,
// which is right for devices that return chains in the order they take
// them or hold them: the ones a snapshot supports. Positions come from
// guest memory, not from the state file, so the two cannot disagree; a
// hostile used.idx makes at most this queue fail like a broken driver.
func (q *Queue) Resume() {
	idx := ringmem.Load16(q.used, q.usedOff+ringIdx)
	q.nextAvail, q.nextUsed, q.signalUsed = idx, idx, idx
}

// Position returns the next available entry the device will take and the
// used ring's index, for tests and diagnostics.
func (q *Queue) Position() (nextAvail, nextUsed uint16) { return q.nextAvail, q.nextUsed }
