package pm

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
)

func TestStateRoundTrip(t *testing.T) {
	f := newFixture()
	f.write16(regEnable, enPowerButton)
	require.NoError(t, f.pm.PressPowerButton())
	s := f.pm.State()

	g := newFixture()
	require.NoError(t, g.pm.Restore(s))
	assert.Equal(t, s, g.pm.State())
	assert.True(t, g.pm.SCIAsserted())
	assert.Equal(t, int32(1), g.irq.n.Load(), "the pending power button is raised on the new irqchip")
	assert.Equal(t, uint16(stsPowerButton), g.read16(regStatus))
}

func TestRestoreRejects(t *testing.T) {
	for name, s := range map[string]State{
		"status":  {Status: 1 << 3},
		"enable":  {Enable: 1 << 15},
		"control": {Control: cntSleepEnable},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture()
			assert.ErrorIs(t, f.pm.Restore(s), devices.ErrBadState)
			assert.Equal(t, State{}, f.pm.State())
		})
	}
}
