package i8042

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type countingIRQ struct{ n atomic.Int64 }

func (c *countingIRQ) Trigger() error { c.n.Add(1); return nil }

func (c *countingIRQ) count() int { return int(c.n.Load()) }

type rig struct {
	c        *Controller
	kbd, aux *countingIRQ
	resets   *atomic.Int64
}

func newRig(t testing.TB) rig {
	t.Helper()
	r := rig{kbd: &countingIRQ{}, aux: &countingIRQ{}, resets: &atomic.Int64{}}
	r.c = New(r.kbd, r.aux, func() { r.resets.Add(1) }, nil)
	return r
}

func (r rig) status() byte { return r.read(offCommand) }

func (r rig) read(off uint64) byte {
	b := []byte{0}
	r.c.Read(off, b)
	return b[0]
}

func (r rig) cmd(v byte) { r.c.Write(offCommand, []byte{v}) }

func (r rig) data(v byte) { r.c.Write(offData, []byte{v}) }

func TestPowerOnStatus(t *testing.T) {
	r := newRig(t)
	assert.Equal(t, byte(stsUnlocked|stsSys), r.status())
}

func TestCommandsWithResponse(t *testing.T) {
	tests := []struct {
		name  string
		cmd   byte
		want  byte
		ctrIs byte // CTR value after the command
	}{
		{"self test", cmdSelfTest, respSelfTestOK, initialCTR},
		{"keyboard interface test", cmdKbdTest, respInterfaceOK, initialCTR},
		{"aux interface test", cmdAuxTest, respInterfaceOK, initialCTR},
		{"read command byte", cmdReadCTR, initialCTR, initialCTR},
		{"read output port", cmdReadOutput, initialOutput, initialCTR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.cmd(tt.cmd)
			assert.Equal(t, byte(stsOBF|stsUnlocked|stsSys|stsCmd), r.status())
			assert.Equal(t, tt.want, r.read(offData))
			assert.Zero(t, r.status()&stsOBF, "reading the data port empties the buffer")
			assert.Equal(t, tt.want, r.read(offData), "the buffer keeps its last byte")
			r.cmd(cmdReadCTR)
			assert.Equal(t, tt.ctrIs, r.read(offData))
			assert.Zero(t, r.kbd.count()+r.aux.count(), "interrupts are off at power-on")
			assert.Zero(t, r.resets.Load())
		})
	}
}

func TestCommandByteBits(t *testing.T) {
	const bothOff = initialCTR | ctrAuxDis | ctrKbdDis
	tests := []struct {
		name  string
		start byte
		cmd   byte
		want  byte
	}{
		{"disable aux", initialCTR, cmdAuxDisable, initialCTR | ctrAuxDis},
		{"disable keyboard", initialCTR, cmdKbdDisable, initialCTR | ctrKbdDis},
		{"enable aux", bothOff, cmdAuxEnable, initialCTR | ctrKbdDis},
		{"enable keyboard", bothOff, cmdKbdEnable, initialCTR | ctrAuxDis},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.cmd(cmdWriteCTR)
			r.data(tt.start)
			r.cmd(tt.cmd)
			assert.Zero(t, r.status()&stsOBF, "no response")
			r.cmd(cmdReadCTR)
			assert.Equal(t, tt.want, r.read(offData))
		})
	}
}

func TestWriteCommandByte(t *testing.T) {
	r := newRig(t)
	r.cmd(cmdWriteCTR)
	r.data(ctrKbdInt | ctrAuxInt)
	assert.Zero(t, r.status()&stsSys, "the system flag follows the command byte")
	assert.Zero(t, r.status()&stsCmd, "last write went to the data port")
	r.cmd(cmdReadCTR)
	assert.Equal(t, byte(ctrKbdInt|ctrAuxInt), r.read(offData))
	assert.Equal(t, 1, r.kbd.count(), "the response raises IRQ 1 once enabled")
	r.cmd(cmdSelfTest)
	assert.NotZero(t, r.status()&stsSys, "a passed self test sets the system flag")
}

func TestReset(t *testing.T) {
	tests := []struct {
		name      string
		writes    [][2]byte // {offset, value}
		wantReset int64
	}{
		{"pulse reset line", [][2]byte{{offCommand, 0xfe}}, 1},
		{"pulse all lines", [][2]byte{{offCommand, 0xf0}}, 1},
		{"pulse nothing", [][2]byte{{offCommand, 0xff}}, 0},
		{"pulse A20 only", [][2]byte{{offCommand, 0xfd}}, 0},
		{"Linux retries", [][2]byte{{offCommand, 0xfe}, {offCommand, 0xfe}, {offCommand, 0xfe}}, 3},
		{"output port reset low", [][2]byte{{offCommand, cmdWriteOutput}, {offData, outA20}}, 1},
		{"output port reset high", [][2]byte{{offCommand, cmdWriteOutput}, {offData, outResetN}}, 0},
		{"0xfe as data is not a command", [][2]byte{{offData, 0xfe}}, 0},
		{"0xfe after a param command is its parameter", [][2]byte{{offCommand, cmdWriteCTR}, {offData, 0xfe}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			for _, w := range tt.writes {
				r.c.Write(uint64(w[0]), []byte{w[1]})
			}
			assert.Equal(t, tt.wantReset, r.resets.Load())
		})
	}
}

func TestOutputPortReadBack(t *testing.T) {
	r := newRig(t)
	r.cmd(cmdWriteOutput)
	r.data(outResetN)
	r.cmd(cmdReadOutput)
	assert.Equal(t, byte(outResetN), r.read(offData))
}

func TestResetCalledWithoutLock(t *testing.T) {
	var c *Controller
	var status byte
	c = New(&countingIRQ{}, &countingIRQ{}, func() {
		b := []byte{0}
		c.Read(offCommand, b) // would deadlock under the lock
		status = b[0]
	}, nil)
	c.Write(offCommand, []byte{0xfe})
	assert.Equal(t, byte(stsUnlocked|stsSys|stsCmd), status)
}

func TestLoopbackAndInterrupts(t *testing.T) {
	tests := []struct {
		name             string
		cmd              byte
		ctr              byte
		wantStatus       byte
		wantKbd, wantAux int
	}{
		{"aux loopback, AUX interrupt on", cmdWriteAuxOBF, ctrAuxInt, stsOBF | stsAuxData, 0, 1},
		{"aux loopback, interrupts off", cmdWriteAuxOBF, 0, stsOBF | stsAuxData, 0, 0},
		{"aux loopback, only keyboard interrupt", cmdWriteAuxOBF, ctrKbdInt, stsOBF | stsAuxData, 0, 0},
		{"keyboard loopback", cmdWriteKbdOBF, ctrKbdInt | ctrAuxInt, stsOBF, 1, 0},
		{"byte to missing mouse", cmdWriteAux, ctrKbdInt | ctrAuxInt, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.cmd(cmdWriteCTR)
			r.data(tt.ctr)
			r.cmd(tt.cmd)
			r.data(0x5a)
			assert.Equal(t, tt.wantStatus|stsUnlocked, r.status())
			assert.Equal(t, tt.wantKbd, r.kbd.count())
			assert.Equal(t, tt.wantAux, r.aux.count())
			if tt.wantStatus&stsOBF != 0 {
				assert.Equal(t, byte(0x5a), r.read(offData))
			}
		})
	}
}

func TestEnablingInterruptWithFullBuffer(t *testing.T) {
	r := newRig(t)
	r.cmd(cmdWriteAuxOBF)
	r.data(0x11)
	assert.Zero(t, r.aux.count())
	r.cmd(cmdWriteCTR) // the loopback byte stays in the buffer
	r.data(ctrAuxInt)
	assert.Equal(t, 1, r.aux.count(), "the line rises when its interrupt is enabled")
	r.cmd(cmdWriteCTR)
	r.data(ctrAuxInt)
	assert.Equal(t, 1, r.aux.count(), "no edge while the line stays high")
	assert.Equal(t, byte(0x11), r.read(offData))
	r.cmd(cmdWriteAuxOBF)
	r.data(0x22)
	assert.Equal(t, 2, r.aux.count())
}

// TestLinuxProbe replays the command sequence of Linux's i8042 probe
// (i8042_controller_check, _selftest, _init and i8042_check_aux) and
// checks every answer arrives at once, with the AUX IRQ delivery test
// succeeding.
func TestLinuxProbe(t *testing.T) {
	r := newRig(t)
	// command sends cmd and params and reads nresp bytes, like
	// __i8042_command; a missing byte would be a 500 ms timeout.
	command := func(cmd byte, params []byte, nresp int) []byte {
		t.Helper()
		require.Zero(t, r.status()&stsIBF)
		r.cmd(cmd)
		for _, p := range params {
			r.data(p)
		}
		var got []byte
		for range nresp {
			require.NotZero(t, r.status()&stsOBF, "command %#x: no response", cmd)
			got = append(got, r.read(offData))
		}
		return got
	}
	// i8042_flush: the buffer drains.
	for r.status()&stsOBF != 0 {
		r.read(offData)
	}
	assert.Zero(t, r.status()&stsUnlocked^stsUnlocked, "no keylock")
	assert.Equal(t, []byte{respSelfTestOK}, command(cmdSelfTest, nil, 1))
	ctr := command(cmdReadCTR, nil, 1)[0]
	assert.Equal(t, ctr, command(cmdReadCTR, nil, 1)[0], "stable CTR")
	ctr = ctr | ctrKbdDis&^ctrKbdInt
	command(cmdWriteCTR, []byte{ctr}, 0)

	// i8042_check_aux.
	r.cmd(cmdWriteAuxOBF)
	r.data(0x5a)
	require.Equal(t, byte(stsOBF|stsAuxData), r.status()&(stsOBF|stsAuxData))
	assert.Equal(t, byte(0x5a), r.read(offData))
	command(cmdAuxDisable, nil, 0)
	assert.NotZero(t, command(cmdReadCTR, nil, 1)[0]&ctrAuxDis)
	command(cmdAuxEnable, nil, 0)
	assert.Zero(t, command(cmdReadCTR, nil, 1)[0]&ctrAuxDis)
	ctr = ctr&^ctrAuxDis | ctrAuxInt
	command(cmdWriteCTR, []byte{ctr}, 0)
	command(cmdWriteAuxOBF, []byte{0xa5}, 0)
	assert.Equal(t, 1, r.aux.count(), "AUX IRQ delivered")
	assert.Equal(t, byte(0xa5), r.read(offData))
	// Not a MUX: the third loopback byte comes back unchanged.
	assert.Equal(t, []byte{0xa4}, command(cmdWriteAuxOBF, []byte{0xa4}, 1))
	assert.Zero(t, r.kbd.count())
	assert.Zero(t, r.resets.Load())
}

// TestEveryCommandHarmless sends every non-pulse command with a data byte
// that keeps the reset line high: none may panic or reset.
func TestEveryCommandHarmless(t *testing.T) {
	for cmd := range 0xf0 {
		r := newRig(t)
		assert.NotPanics(t, func() {
			r.cmd(byte(cmd))
			r.data(outResetN)
			r.read(offData)
			r.status()
		})
		assert.Zero(t, r.resets.Load(), "command %#x", cmd)
	}
}

func TestAccessWidthsAndOffsets(t *testing.T) {
	for off := uint64(0); off < 16; off++ {
		for _, width := range []int{1, 2, 4, 8} {
			r := newRig(t)
			data := bytes.Repeat([]byte{0xfe}, width)
			assert.NotPanics(t, func() {
				r.c.Write(off, data)
				r.c.Read(off, data)
			}, "offset %d width %d", off, width)
			decoded := width == 1 && (off == offData || off == offCommand)
			if !decoded {
				assert.Equal(t, bytes.Repeat([]byte{0xff}, width), data, "offset %d width %d", off, width)
			}
			assert.Equal(t, decoded && off == offCommand, r.resets.Load() == 1, "offset %d width %d", off, width)
		}
	}
}

func TestConcurrent(t *testing.T) {
	r := newRig(t)
	r.cmd(cmdWriteCTR)
	r.data(ctrKbdInt | ctrAuxInt)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 500 {
				r.cmd(cmdWriteAuxOBF)
				r.data(1)
				r.status()
				r.read(offData)
				r.cmd(cmdReadCTR)
			}
		})
	}
	wg.Wait()
	assert.Positive(t, r.aux.count())
}
