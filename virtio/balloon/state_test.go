package balloon

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
)

func TestStateRoundTrip(t *testing.T) {
	b, err := New(Options{MemoryBytes: 64 << 20, Target: 16 << 20})
	require.NoError(t, err)
	b.WriteConfig(cfgActual, []byte{0x00, 0x10, 0, 0})
	b.inflated.Store(4096)
	s := b.State()
	assert.Equal(t, State{NumPages: 4096, Actual: 4096, InflatedPages: 4096}, s)

	c, err := New(Options{MemoryBytes: 64 << 20})
	require.NoError(t, err)
	require.NoError(t, c.Restore(s))
	assert.Equal(t, s, c.State())
	assert.Equal(t, uint64(16<<20), c.Target())
	assert.Equal(t, uint64(16<<20), c.Actual())
}

func TestRestoreRejectsMoreThanRAM(t *testing.T) {
	b, err := New(Options{MemoryBytes: 64 << 20})
	require.NoError(t, err)
	for _, s := range []State{{NumPages: 1 << 20}, {Actual: 1 << 20}, {InflatedPages: 1 << 40}} {
		assert.ErrorIs(t, b.Restore(s), devices.ErrBadState)
		assert.Equal(t, State{}, b.State())
	}
}
