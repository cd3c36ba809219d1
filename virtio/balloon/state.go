package balloon

import (
	"fmt"

	"github.com/gvmm-dev/gvmm/devices"
)

// State is the balloon's own state, for snapshots; its queues are the
// transport's. The statistics buffer the device held is not in it: the
// restored queue hands it over again (queue.Resume).
type State struct {
	NumPages      uint32 // the target the host set
	Actual        uint32 // what the driver last reported
	InflatedPages uint64
}

// State returns the balloon's state.
func (b *Balloon) State() State {
	b.cfgMu.Lock()
	defer b.cfgMu.Unlock()
	return State{NumPages: b.numPages, Actual: b.actual, InflatedPages: b.inflated.Load()}
}

// Restore loads s into a balloon for the same guest RAM size, before its
// transport is restored. s is untrusted: no count may exceed the RAM.
func (b *Balloon) Restore(s State) error {
	pages := b.memBytes >> PageShift
	if uint64(s.NumPages) > pages || uint64(s.Actual) > pages || s.InflatedPages > pages {
		return fmt.Errorf("balloon: %w: target %d, actual %d, inflated %d pages of %d",
			devices.ErrBadState, s.NumPages, s.Actual, s.InflatedPages, pages)
	}
	b.cfgMu.Lock()
	defer b.cfgMu.Unlock()
	b.numPages, b.actual = s.NumPages, s.Actual
	b.inflated.Store(s.InflatedPages)
	return nil
}
