package cmos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
)

func TestStateRoundTrip(t *testing.T) {
	r := newRTC(host)
	set(r, idxB, bDefault|bBinary)
	set(r, idxYear, 30) // the guest set its clock: an offset from the host's
	set(r, 0x40, 0xab)  // plain RAM
	s := r.State()

	later := host.Add(time.Hour)
	g := newRTC(later)
	require.NoError(t, g.Restore(s))
	assert.Equal(t, s, g.State())
	assert.Equal(t, byte(0xab), get(g, 0x40))
	assert.Equal(t, byte(30), get(g, idxYear), "the guest's offset survives")
	assert.Equal(t, byte(later.UTC().Hour()), get(g, idxHours), "the clock reads the real time, not the saved one")
}

func TestRestoreRejects(t *testing.T) {
	for name, edit := range map[string]func(*State){
		"index":        func(s *State) { s.Index = 0x80 },
		"offset":       func(s *State) { s.Offset = maxOffset + 1 },
		"frozen month": func(s *State) { s.Frozen.Month = 256 },
		"frozen nsec":  func(s *State) { s.Frozen.Nsec = int(time.Second) },
		"frozen year":  func(s *State) { s.Frozen.Year = -1 },
	} {
		t.Run(name, func(t *testing.T) {
			r := newRTC(host)
			before := r.State()
			s := before
			edit(&s)
			assert.ErrorIs(t, r.Restore(s), devices.ErrBadState)
			assert.Equal(t, before, r.State())
		})
	}
}
