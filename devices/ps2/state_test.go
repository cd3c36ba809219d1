package ps2

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
)

func TestStateRoundTrip(t *testing.T) {
	f := newFixture()
	f.cmd(cmdSelfTest)
	f.cmd(cmdReadCommandByte)
	f.cmd(cmdWriteCommandByte) // waits for its parameter
	s := f.c.State()
	require.Len(t, s.Output, 2)

	g := newFixture()
	require.NoError(t, g.c.Restore(s))
	assert.Equal(t, s, g.c.State())
	g.data(cbKbdInt | cbSystem) // the parameter the saved command waited for
	assert.Equal(t, []byte{selfTestOK, cbDefault}, g.drain(t))
	assert.Equal(t, byte(cbKbdInt|cbSystem), g.c.State().CommandByte)
}

func TestRestoreRejects(t *testing.T) {
	for name, s := range map[string]State{
		"parameterless pending command": {PendingCommand: cmdSelfTest},
		"output overflow":               {Output: make([]byte, queueLen+1)},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture()
			before := f.c.State()
			assert.ErrorIs(t, f.c.Restore(s), devices.ErrBadState)
			assert.Equal(t, before, f.c.State())
		})
	}
}
