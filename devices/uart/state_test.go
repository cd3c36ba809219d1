package uart

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
)

func TestStateRoundTrip(t *testing.T) {
	u, _ := newUART(&bytes.Buffer{})
	wr(u, regLCR, lcrDLAB|0x03)
	wr(u, regData, 0x0c)
	wr(u, regLCR, 0x03)
	wr(u, regSCR, 0x5a)
	wr(u, regMCR, mcrOUT2)
	wr(u, regIER, ierRxData)
	require.NoError(t, u.Receive(context.Background(), []byte("abc")))
	assert.Equal(t, byte('a'), rd(u, regData)) // the FIFO's head moves off 0

	s := u.State()
	v, _ := newUART(&bytes.Buffer{})
	require.NoError(t, v.Restore(s))
	assert.Equal(t, s, v.State())
	assert.Equal(t, byte(0x5a), rd(v, regSCR))
	assert.Equal(t, byte(iirRxData), rd(v, regIIR))
	assert.Equal(t, byte('b'), rd(v, regData))
	assert.Equal(t, byte('c'), rd(v, regData))
	assert.Zero(t, rd(v, regLSR)&lsrDR)
	assert.Equal(t, uint16(0x0c), v.State().Divisor)
}

func TestRestoreRejects(t *testing.T) {
	good := State{LSR: lsrTHRE | lsrTEMT}
	tests := []struct {
		name string
		edit func(*State)
	}{
		{"FIFO overflow", func(s *State) { s.RX, s.LSR = make([]byte, fifoSize+1), s.LSR|lsrDR }},
		{"IER reserved bits", func(s *State) { s.IER = 0xf0 }},
		{"MCR reserved bits", func(s *State) { s.MCR = 0x80 }},
		{"data ready without data", func(s *State) { s.LSR |= lsrDR }},
		{"data without data ready", func(s *State) { s.RX = []byte{1} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, _ := newUART(&bytes.Buffer{})
			before := u.State()
			s := good
			tt.edit(&s)
			assert.ErrorIs(t, u.Restore(s), devices.ErrBadState)
			assert.Equal(t, before, u.State(), "a refused state changes nothing")
		})
	}
}
