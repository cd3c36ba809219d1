package ps2

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type countIRQ struct{ n atomic.Int32 }

func (c *countIRQ) Trigger() error { c.n.Add(1); return nil }

type fixture struct {
	c      *Controller
	irqs   countIRQ
	resets atomic.Int32
}

func newFixture() *fixture {
	f := &fixture{}
	f.c = New(&f.irqs, func() { f.resets.Add(1) }, slog.New(slog.DiscardHandler))
	return f
}

func (f *fixture) cmd(v byte)  { f.c.Write(regCommand, []byte{v}) }
func (f *fixture) data(v byte) { f.c.Write(regData, []byte{v}) }

func (f *fixture) status() byte {
	var b [1]byte
	f.c.Read(regCommand, b[:])
	return b[0]
}

func (f *fixture) pop() byte {
	var b [1]byte
	f.c.Read(regData, b[:])
	return b[0]
}

// drain reads the output buffer the way Linux does: while the status
// register says a byte is there.
func (f *fixture) drain(t *testing.T) []byte {
	t.Helper()
	var out []byte
	for i := 0; f.status()&stsOutputFull != 0; i++ {
		require.Less(t, i, 100, "output buffer never empties")
		out = append(out, f.pop())
	}
	return out
}

func TestReset(t *testing.T) {
	tests := []struct {
		name   string
		cmds   []byte // (port, value) pairs, port 0 or 4
		resets int32
	}{
		{"pulse reset 0xFE", []byte{regCommand, cmdPulseReset}, 1},
		{"output port with reset bit clear", []byte{regCommand, cmdWriteOutputPort, regData, outA20}, 1},
		{"output port with reset bit set", []byte{regCommand, cmdWriteOutputPort, regData, outDefault}, 0},
		{"0xFE on the data port goes to the keyboard", []byte{regData, cmdPulseReset}, 0},
		{"data byte 0 without 0xD1 pending", []byte{regData, 0x00}, 0},
		{"0xD1 abandoned by another command", []byte{regCommand, cmdWriteOutputPort, regCommand, cmdSelfTest, regData, 0x00}, 0},
		{"pulse all lines 0xF0 includes reset", []byte{regCommand, 0xF0}, 1},
		{"pulse no line 0xFF", []byte{regCommand, 0xFF}, 0},
		{"pulse A20 only 0xFD", []byte{regCommand, 0xFD}, 0},
		{"unknown command", []byte{regCommand, 0xC0}, 0},
		{"two resets", []byte{regCommand, cmdPulseReset, regCommand, cmdPulseReset}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			for i := 0; i < len(tt.cmds); i += 2 {
				f.c.Write(uint64(tt.cmds[i]), []byte{tt.cmds[i+1]})
			}
			assert.Equal(t, tt.resets, f.resets.Load())
		})
	}
}

func TestResetCalledOutsideLock(t *testing.T) {
	var c *Controller
	called := false
	c = New(&countIRQ{}, func() {
		// Would deadlock if the lock were held.
		var b [1]byte
		c.Read(regCommand, b[:])
		called = true
	}, slog.New(slog.DiscardHandler))
	c.Write(regCommand, []byte{cmdPulseReset})
	assert.True(t, called)
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name string
		cmd  byte
		data []byte // parameter bytes written to the data port
		want []byte
	}{
		{"self test", cmdSelfTest, nil, []byte{selfTestOK}},
		{"keyboard interface test", cmdKbdInterfaceTest, nil, []byte{interfaceTestOK}},
		{"read command byte", cmdReadCommandByte, nil, []byte{cbDefault}},
		{"read output port", cmdReadOutputPort, nil, []byte{outDefault}},
		{"write keyboard buffer loops back", cmdWriteKbdBuffer, []byte{0x5a}, []byte{0x5a}},
		{"write aux buffer loops back", cmdWriteAuxBuffer, []byte{0x5a}, []byte{0x5a}},
		{"write to absent mouse gets nothing", cmdWriteAux, []byte{0xff}, nil},
		{"disable keyboard", cmdDisableKbd, nil, nil},
		{"unknown command ignored", 0xC0, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			f.cmd(tt.cmd)
			assert.NotZero(t, f.status()&stsCommand)
			for _, d := range tt.data {
				f.data(d)
			}
			assert.Equal(t, tt.want, f.drain(t))
			assert.Zero(t, f.pop(), "empty buffer reads 0")
		})
	}
}

func TestCommandByte(t *testing.T) {
	tests := []struct {
		name       string
		cmds       []byte // controller commands, before reading the byte
		write      *byte  // command byte written via 0x60 first
		want       byte
		wantSystem bool
	}{
		{"default", nil, nil, cbDefault, true},
		{"round trip", nil, ptr(cbKbdInt | cbAuxInt | cbTranslate), cbKbdInt | cbAuxInt | cbTranslate, false},
		{"round trip with system flag", nil, ptr(cbSystem), cbSystem, true},
		{"enable aux", []byte{cmdEnableAux}, nil, cbDefault &^ cbAuxDisable, true},
		{"disable aux", []byte{cmdEnableAux, cmdDisableAux}, nil, cbDefault, true},
		{"disable kbd", []byte{cmdDisableKbd}, nil, cbDefault | cbKbdDisable, true},
		{"enable kbd", []byte{cmdDisableKbd, cmdEnableKbd}, nil, cbDefault, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			if tt.write != nil {
				f.cmd(cmdWriteCommandByte)
				f.data(*tt.write)
				assert.Empty(t, f.drain(t), "the command byte must not reach the keyboard")
			}
			for _, c := range tt.cmds {
				f.cmd(c)
			}
			assert.Equal(t, tt.wantSystem, f.status()&stsSystem != 0)
			f.cmd(cmdReadCommandByte)
			assert.Equal(t, []byte{tt.want}, f.drain(t))
		})
	}
}

func ptr(b byte) *byte { return &b }

func TestKeyboard(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want []byte
	}{
		{"reset", []byte{kbdReset}, []byte{kbdAck, kbdSelfTest}},
		{"get id", []byte{kbdGetID}, []byte{kbdAck, kbdID0, kbdID1}},
		{"echo", []byte{kbdEcho}, []byte{kbdEcho}},
		{"enable scanning", []byte{0xF4}, []byte{kbdAck}},
		{"disable scanning", []byte{0xF5}, []byte{kbdAck}},
		{"set leds with parameter", []byte{0xED, 0x07}, []byte{kbdAck, kbdAck}},
		{"typematic with parameter", []byte{0xF3, 0x20}, []byte{kbdAck, kbdAck}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			for _, b := range tt.in {
				f.data(b)
			}
			assert.Zero(t, f.status()&stsCommand)
			assert.Equal(t, tt.want, f.drain(t))
		})
	}
}

func TestQueueBound(t *testing.T) {
	f := newFixture()
	for range 100 {
		f.data(kbdReset) // two bytes each
	}
	got := f.drain(t)
	require.Len(t, got, queueLen)
	for i, b := range got {
		if i%2 == 0 {
			assert.Equal(t, byte(kbdAck), b, "byte %d", i)
		} else {
			assert.Equal(t, byte(kbdSelfTest), b, "byte %d", i)
		}
	}
	// Room again after draining.
	f.cmd(cmdSelfTest)
	assert.Equal(t, []byte{selfTestOK}, f.drain(t))
}

func TestStatusIdle(t *testing.T) {
	f := newFixture()
	s := f.status()
	assert.Zero(t, s&stsOutputFull)
	assert.Zero(t, s&stsInputFull)
	assert.NotZero(t, s&stsSystem)
	assert.NotZero(t, s&stsUnlocked)
}

func TestAnyAccessIsSafe(t *testing.T) {
	for _, width := range []int{1, 2, 4, 8} {
		for off := uint64(0); off < 8; off++ {
			f := newFixture()
			b := make([]byte, width)
			assert.NotPanics(t, func() { f.c.Read(off, b) })
			if width != 1 || (off != regData && off != regCommand) {
				assert.Equal(t, make([]byte, width), xor(b), "width %d offset %d reads all-ones", width, off)
			}
			for _, v := range []byte{0x00, 0xff, cmdPulseReset, cmdWriteOutputPort} {
				for i := range b {
					b[i] = v
				}
				assert.NotPanics(t, func() { f.c.Write(off, b) })
			}
		}
	}
}

func xor(b []byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[i] = b[i] ^ 0xff
	}
	return out
}

func TestConcurrent(t *testing.T) {
	f := newFixture()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				f.data(kbdReset)
				f.cmd(cmdSelfTest)
				f.status()
				f.pop()
			}
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, len(f.drain(t)), queueLen)
}

func TestKeyboardAnswersInterrupt(t *testing.T) {
	f := newFixture()
	f.data(kbdGetID)
	assert.Equal(t, int32(1), f.irqs.n.Load(), "the ACK interrupts")
	assert.Equal(t, byte(kbdAck), f.pop())
	assert.Equal(t, int32(2), f.irqs.n.Load(), "so does each byte still waiting")
	f.pop()
	f.pop()
	assert.Equal(t, int32(3), f.irqs.n.Load(), "an empty buffer does not")

	f.cmd(0xaa) // controller self test: polled, not interrupting
	assert.Equal(t, int32(3), f.irqs.n.Load())
	assert.Equal(t, byte(0x55), f.pop())

	f.cmd(0x60) // write command byte: keyboard interrupts off
	f.data(cbDefault &^ cbKbdInt)
	f.data(kbdEcho)
	assert.Equal(t, int32(3), f.irqs.n.Load(), "disabled in the command byte")
}
