// Package i8042 emulates the PS/2 controller of a PC far enough for a
// guest to reset the machine through it and for Linux's i8042 driver to
// probe it without waiting on timeouts. No keyboard or mouse is attached:
// bytes sent to them are dropped and they never answer.
//
// The device covers ports 0x60-0x64: the data port at offset 0 and the
// status (read) / command (write) port at offset 4. Offsets 1-3 (port
// 0x61 is system control port B, which KVM's in-kernel PIT serves) read
// as all-ones.
package i8042

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/gvmm-dev/gvmm/devices"
)

// DefaultBase is the controller's port on a PC; Size is the range it
// decodes from there.
const (
	DefaultBase = 0x60
	Size        = 5
)

// Port offsets from the base.
const (
	offData    = 0
	offCommand = 4 // status register on read
)

// Status register bits.
const (
	stsOBF      = 0x01 // output buffer full: the guest may read the data port
	stsIBF      = 0x02 // input buffer full; never set, we consume writes at once
	stsSys      = 0x04 // system flag, mirrors the command byte's
	stsCmd      = 0x08 // the last write went to the command port
	stsUnlocked = 0x10 // keyboard not inhibited by a keylock
	stsAuxData  = 0x20 // the output buffer holds AUX (mouse) data
)

// Command byte (controller RAM byte 0) bits.
const (
	ctrKbdInt = 0x01 // raise the keyboard interrupt when OBF fills with keyboard data
	ctrAuxInt = 0x02 // same for AUX data
	ctrSys    = 0x04
	ctrKbdDis = 0x10
	ctrAuxDis = 0x20
	ctrXlate  = 0x40
)

// Output port bits.
const (
	outResetN = 0x01 // CPU reset line, active low
	outA20    = 0x02 // A20 gate; KVM does not model A20 masking, so it is only stored
)

// Controller commands, written to the command port.
const (
	cmdReadCTR     = 0x20
	cmdWriteCTR    = 0x60
	cmdAuxDisable  = 0xa7
	cmdAuxEnable   = 0xa8
	cmdAuxTest     = 0xa9
	cmdSelfTest    = 0xaa
	cmdKbdTest     = 0xab
	cmdKbdDisable  = 0xad
	cmdKbdEnable   = 0xae
	cmdReadOutput  = 0xd0
	cmdWriteOutput = 0xd1
	cmdWriteKbdOBF = 0xd2 // next data byte appears as if the keyboard sent it
	cmdWriteAuxOBF = 0xd3 // next data byte appears as if the mouse sent it (AUX loopback)
	cmdWriteAux    = 0xd4 // next data byte goes to the mouse
	// Commands 0xf0-0xff pulse the output port lines whose bit in the low
	// nibble is clear; 0xfe pulses only the reset line.
	cmdPulseMask = 0xf0
)

// Controller responses.
const (
	respSelfTestOK  = 0x55
	respInterfaceOK = 0x00
)

// Power-on state, as firmware leaves it: POST passed, scancode translation
// on, interrupts off until the OS enables them; reset line and A20 high.
const (
	initialCTR    = ctrSys | ctrXlate
	initialOutput = outResetN | outA20
)

// Controller is the i8042. It is safe for concurrent use.
type Controller struct {
	kbdIRQ, auxIRQ devices.Interrupt
	reset          func()
	log            *slog.Logger
	irqErrLogged   atomic.Bool

	mu      sync.Mutex
	ctr     byte
	output  byte // output port
	obf     bool
	aux     bool // the output buffer's byte came from the AUX side
	data    byte // output buffer; keeps its last value once read, as the chip does
	lastCmd bool // last write was to the command port
	pending byte // command waiting for its data byte, or 0
	// lines records which interrupt lines were raised after the last
	// access, so only rising edges trigger.
	kbdLine, auxLine bool
	unknownLogged    [256]bool
}

var _ devices.Device = (*Controller)(nil)

// New returns a controller in its power-on state. kbdIRQ and auxIRQ are
// ISA IRQ 1 and 12. reset is called, outside the controller's lock, when
// the guest pulses the CPU reset line; it may be called more than once,
// as Linux retries the reset command. A nil log discards log lines.
func New(kbdIRQ, auxIRQ devices.Interrupt, reset func(), log *slog.Logger) *Controller {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Controller{
		kbdIRQ: kbdIRQ,
		auxIRQ: auxIRQ,
		reset:  reset,
		log:    log,
		ctr:    initialCTR,
		output: initialOutput,
	}
}

// Read implements devices.Device. Only byte reads of offsets 0 and 4 are
// decoded; anything else reads as all-ones.
func (c *Controller) Read(offset uint64, data []byte) {
	if len(data) != 1 || (offset != offData && offset != offCommand) {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	c.mu.Lock()
	if offset == offData {
		data[0] = c.data
		c.obf = false
	} else {
		data[0] = c.status()
	}
	// Reading can only lower the lines: nothing to trigger.
	c.updateLines()
	c.mu.Unlock()
}

// Write implements devices.Device. Accesses that are not byte writes to
// offsets 0 or 4 are ignored.
func (c *Controller) Write(offset uint64, data []byte) {
	if len(data) != 1 || (offset != offData && offset != offCommand) {
		return
	}
	c.mu.Lock()
	var reset bool
	if offset == offData {
		reset = c.writeData(data[0])
	} else {
		reset = c.command(data[0])
	}
	kbd, aux := c.updateLines()
	c.mu.Unlock()
	if kbd {
		c.trigger(c.kbdIRQ)
	}
	if aux {
		c.trigger(c.auxIRQ)
	}
	if reset {
		c.reset()
	}
}

func (c *Controller) status() byte {
	v := byte(stsUnlocked)
	if c.obf {
		v |= stsOBF
		if c.aux {
			v |= stsAuxData
		}
	}
	if c.ctr&ctrSys != 0 {
		v |= stsSys
	}
	if c.lastCmd {
		v |= stsCmd
	}
	return v
}

// command runs a controller command and reports whether it pulsed reset.
func (c *Controller) command(cmd byte) (reset bool) {
	c.lastCmd = true
	c.pending = 0 // a new command abandons one still waiting for data
	switch cmd {
	case cmdReadCTR:
		c.respond(c.ctr, false)
	case cmdWriteCTR, cmdWriteOutput, cmdWriteKbdOBF, cmdWriteAuxOBF, cmdWriteAux:
		c.pending = cmd
	case cmdAuxDisable:
		c.ctr |= ctrAuxDis
	case cmdAuxEnable:
		c.ctr &^= ctrAuxDis
	case cmdAuxTest, cmdKbdTest:
		c.respond(respInterfaceOK, false)
	case cmdSelfTest:
		c.ctr |= ctrSys
		c.respond(respSelfTestOK, false)
	case cmdKbdDisable:
		c.ctr |= ctrKbdDis
	case cmdKbdEnable:
		c.ctr &^= ctrKbdDis
	case cmdReadOutput:
		c.respond(c.output, false)
	default:
		if cmd&cmdPulseMask == cmdPulseMask {
			return cmd&outResetN == 0
		}
		if !c.unknownLogged[cmd] {
			c.unknownLogged[cmd] = true
			c.log.Debug("i8042: ignoring unsupported command", "cmd", cmd)
		}
	}
	return false
}

// writeData takes a data-port byte: the parameter of a pending command, or
// else a byte for the keyboard. It reports whether reset was requested.
func (c *Controller) writeData(v byte) (reset bool) {
	c.lastCmd = false
	cmd := c.pending
	c.pending = 0
	switch cmd {
	case cmdWriteCTR:
		c.ctr = v
	case cmdWriteOutput:
		c.output = v
		return v&outResetN == 0
	case cmdWriteKbdOBF:
		c.respond(v, false)
	case cmdWriteAuxOBF:
		c.respond(v, true)
	}
	// cmdWriteAux and plain data go to a mouse or keyboard that is not
	// there.
	return false
}

// respond places v in the output buffer, overwriting an unread byte: the
// chip has one buffer and the guest that did not read it lost it.
func (c *Controller) respond(v byte, aux bool) {
	c.data = v
	c.aux = aux
	c.obf = true
}

// updateLines recomputes the interrupt lines and reports which rose.
func (c *Controller) updateLines() (kbdRose, auxRose bool) {
	kbd := c.obf && !c.aux && c.ctr&ctrKbdInt != 0
	aux := c.obf && c.aux && c.ctr&ctrAuxInt != 0
	kbdRose, auxRose = kbd && !c.kbdLine, aux && !c.auxLine
	c.kbdLine, c.auxLine = kbd, aux
	return kbdRose, auxRose
}

func (c *Controller) trigger(irq devices.Interrupt) {
	if err := irq.Trigger(); err != nil && c.irqErrLogged.CompareAndSwap(false, true) {
		c.log.Error("i8042: raising interrupt failed; further failures not logged", "err", err)
	}
}
