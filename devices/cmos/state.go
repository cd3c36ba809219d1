package cmos

import (
	"fmt"
	"time"

	"github.com/gvmm-dev/gvmm/devices"
)

// State is the RTC's state, for snapshots. The clock is kept as its
// offset from the host's clock, so a restored guest reads the real time
// plus whatever offset it had set, however long the snapshot waited.
type State struct {
	Index  byte
	RAM    [ramSize]byte
	Offset time.Duration
	// Frozen is the clock the guest is setting while register B's SET
	// bit is on, as it wrote it: fields may be out of range.
	Frozen Clock
}

// Clock is a broken-down time as the guest writes it.
type Clock struct {
	Year, Month, Day, Hour, Minute, Sec, Nsec int
}

// State returns the RTC's state.
func (r *RTC) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.frozen
	return State{Index: r.index, RAM: r.ram, Offset: r.offset,
		Frozen: Clock{f.year, f.month, f.day, f.hour, f.minute, f.sec, f.nsec}}
}

// maxOffset bounds a restored clock offset to what a time.Duration can
// add to the host's clock without overflowing.
const maxOffset = 200 * 365 * 24 * time.Hour

// Restore puts the RTC in state s, which it validates as untrusted.
func (r *RTC) Restore(s State) error {
	f := s.Frozen
	switch {
	case s.Index&^indexMask != 0:
		return fmt.Errorf("cmos: %w: index %#x", devices.ErrBadState, s.Index)
	case s.Offset > maxOffset || s.Offset < -maxOffset:
		return fmt.Errorf("cmos: %w: clock offset %v", devices.ErrBadState, s.Offset)
	case f.Year < 0 || f.Year > 9999 || f.Nsec < 0 || f.Nsec >= int(time.Second) || outOfByte(f.Month, f.Day, f.Hour, f.Minute, f.Sec):
		return fmt.Errorf("cmos: %w: clock being set %+v", devices.ErrBadState, f)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index, r.ram, r.offset = s.Index, s.RAM, s.Offset
	r.frozen = clock{f.Year, f.Month, f.Day, f.Hour, f.Minute, f.Sec, f.Nsec}
	return nil
}

// outOfByte reports whether a field is past what one register can hold.
func outOfByte(fields ...int) bool {
	for _, v := range fields {
		if v < 0 || v > 0xff {
			return true
		}
	}
	return false
}
