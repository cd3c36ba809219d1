// Package ps2 emulates the i8042 PS/2 controller just far enough for a
// guest to reset the machine through it and for Linux's i8042 driver to
// probe it without hanging. There is a keyboard that acknowledges
// commands but never types, and no auxiliary (mouse) device.
//
// Register layout, relative to the device base (port 0x60):
//
//	+0 data: read pops the output buffer, write goes to the keyboard or
//	   to the controller command that asked for a parameter
//	+4 read: status register; write: controller command
//
// No interrupt is wired: the guest has to poll. Linux does so for the
// controller commands it sends during the probe; keyboard commands sent
// later by atkbd wait for IRQ 1 and time out.
package ps2

import (
	"log/slog"
	"sync"

	"github.com/gvmm-dev/gvmm/devices"
)

// Layout of the port range.
const (
	// DefaultBase is the legacy PC port of the data register.
	DefaultBase uint16 = 0x60
	// Size covers the data port (0x60) through the command port (0x64).
	Size = 5

	regData    = 0
	regCommand = 4 // status on read
)

// Status register bits.
const (
	stsOutputFull = 1 << 0 // a byte waits in the output buffer
	stsInputFull  = 1 << 1 // never set: writes are handled at once
	stsSystem     = 1 << 2 // mirrors the command byte's system flag
	stsCommand    = 1 << 3 // the last write went to the command port
	stsUnlocked   = 1 << 4 // keyboard inhibit switch off
)

// Command byte (controller RAM byte 0) bits.
const (
	cbKbdInt     = 1 << 0
	cbAuxInt     = 1 << 1
	cbSystem     = 1 << 2 // POST passed; set by the firmware we do not run
	cbKbdDisable = 1 << 4
	cbAuxDisable = 1 << 5
	cbTranslate  = 1 << 6

	// cbDefault is what firmware leaves behind: keyboard interrupt on,
	// POST passed, scancode translation on, mouse off.
	cbDefault = cbKbdInt | cbSystem | cbTranslate | cbAuxDisable
)

// Output port bits.
const (
	outResetDeasserted = 1 << 0 // clearing it pulses the CPU reset line
	outA20             = 1 << 1

	outDefault = outResetDeasserted | outA20
)

// Controller commands, written to the command port.
const (
	cmdReadCommandByte  = 0x20
	cmdWriteCommandByte = 0x60
	cmdDisableAux       = 0xA7
	cmdEnableAux        = 0xA8
	cmdSelfTest         = 0xAA
	cmdKbdInterfaceTest = 0xAB
	cmdDisableKbd       = 0xAD
	cmdEnableKbd        = 0xAE
	cmdReadOutputPort   = 0xD0
	cmdWriteOutputPort  = 0xD1
	cmdWriteKbdBuffer   = 0xD2
	cmdWriteAuxBuffer   = 0xD3
	cmdWriteAux         = 0xD4
	cmdPulseReset       = 0xFE

	// Commands 0xF0-0xFF pulse the output port lines whose bit is clear
	// in the low nibble; 0xFE (bit 0, reset) is the one guests use.
	cmdPulseMask  = 0xF0
	cmdPulseLines = 0x0F

	cmdNone = 0 // no command waits for a parameter byte
)

// Controller responses.
const (
	selfTestOK      = 0x55
	interfaceTestOK = 0x00
)

// Keyboard commands and responses. Every parameter byte of the keyboard
// commands Linux sends (set LEDs, typematic rate, scancode set) is below
// 0x80, so the keyboard can treat each byte on its own and acknowledge
// parameters like commands without mistaking one for the other.
const (
	kbdEcho     = 0xEE
	kbdGetID    = 0xF2
	kbdReset    = 0xFF
	kbdAck      = 0xFA
	kbdSelfTest = 0xAA // basic assurance test passed, sent after a reset

	// An MF2 keyboard's ID, as sent after the ACK of kbdGetID.
	kbdID0 = 0xAB
	kbdID1 = 0x83
)

// queueLen bounds the output buffer; a guest that never reads cannot make
// it grow, the newest bytes are dropped instead.
const queueLen = 16

// Controller is the i8042. It is safe for concurrent use.
type Controller struct {
	reset func()
	irq   devices.Interrupt // IRQ 1: keyboard data waits
	log   *slog.Logger

	mu       sync.Mutex
	queue    [queueLen]byte
	head     int // index of the oldest byte
	count    int
	cmdByte  byte
	outPort  byte
	pending  byte             // command waiting for its parameter on the data port
	lastCmd  bool             // last write went to the command port (stsCommand)
	unknown  [256 / 64]uint64 // bit set: command already logged
	kbdData  bool             // the queue holds the keyboard's answer: it interrupts
	dropped  bool             // a byte did not fit in the queue
	reported bool             // the overflow was logged
}

var _ devices.Device = (*Controller)(nil)

// New returns a controller in its power-on state. reset is called, outside
// the device's lock and from the vCPU thread that asked, each time the
// guest resets the machine through the controller; reset and log must be
// non-nil.
//
// irq is raised whenever a keyboard byte waits in the output buffer and
// the command byte enables keyboard interrupts: Linux's keyboard driver
// waits for it after each command it sends.
func New(irq devices.Interrupt, reset func(), log *slog.Logger) *Controller {
	return &Controller{irq: irq, reset: reset, log: log, cmdByte: cbDefault, outPort: outDefault}
}

// interruptLocked says whether a keyboard byte is waiting for the guest
// with interrupts enabled.
func (c *Controller) interruptLocked() bool {
	return c.kbdData && c.count > 0 && c.cmdByte&cbKbdInt != 0
}

func (c *Controller) trigger(raise bool) {
	if !raise {
		return
	}
	if err := c.irq.Trigger(); err != nil {
		c.log.Warn("i8042: raising IRQ 1", "err", err)
	}
}

// Read implements devices.Device. Only byte accesses at offsets 0 and 4
// are decoded; anything else reads 0xff.
func (c *Controller) Read(offset uint64, data []byte) {
	if len(data) != 1 || (offset != regData && offset != regCommand) {
		fill(data)
		return
	}
	c.mu.Lock()
	if offset == regCommand {
		data[0] = c.statusLocked()
		c.mu.Unlock()
		return
	}
	data[0] = c.popLocked()
	more := c.interruptLocked()
	c.mu.Unlock()
	c.trigger(more)
}

// Write implements devices.Device. Only byte accesses at offsets 0 and 4
// are decoded; anything else is ignored.
func (c *Controller) Write(offset uint64, data []byte) {
	if len(data) != 1 || (offset != regData && offset != regCommand) {
		return
	}
	c.mu.Lock()
	var reset bool
	unknown := -1
	if offset == regCommand {
		reset, unknown = c.commandLocked(data[0])
	} else {
		reset = c.dataLocked(data[0])
	}
	overflow := c.dropped && !c.reported
	c.reported = c.reported || overflow
	raise := c.interruptLocked()
	c.mu.Unlock()
	c.trigger(raise)

	if unknown >= 0 {
		c.log.Debug("i8042: ignoring unimplemented controller command", "cmd", unknown)
	}
	if overflow {
		c.log.Debug("i8042: output buffer full, guest is not reading; dropping bytes")
	}
	if reset {
		c.log.Info("i8042: guest requested a system reset")
		c.reset()
	}
}

func (c *Controller) statusLocked() byte {
	s := byte(stsUnlocked)
	if c.count > 0 {
		s |= stsOutputFull
	}
	if c.cmdByte&cbSystem != 0 {
		s |= stsSystem
	}
	if c.lastCmd {
		s |= stsCommand
	}
	return s
}

// commandLocked runs a controller command. It reports whether the guest
// asked for a reset and, the first time each unknown command is seen, that
// command (else -1), so the guest cannot flood the log.
func (c *Controller) commandLocked(cmd byte) (reset bool, unknown int) {
	c.lastCmd = true
	c.kbdData = false // the guest polls for controller answers
	// A new command abandons one still waiting for its parameter.
	c.pending = cmdNone
	switch cmd {
	case cmdReadCommandByte:
		c.pushLocked(c.cmdByte)
	case cmdWriteCommandByte, cmdWriteOutputPort, cmdWriteKbdBuffer, cmdWriteAuxBuffer, cmdWriteAux:
		c.pending = cmd
	case cmdDisableAux:
		c.cmdByte |= cbAuxDisable
	case cmdEnableAux:
		c.cmdByte &^= cbAuxDisable
	case cmdSelfTest:
		c.pushLocked(selfTestOK)
	case cmdKbdInterfaceTest:
		c.pushLocked(interfaceTestOK)
	case cmdDisableKbd:
		c.cmdByte |= cbKbdDisable
	case cmdEnableKbd:
		c.cmdByte &^= cbKbdDisable
	case cmdReadOutputPort:
		c.pushLocked(c.outPort)
	default:
		if cmd&cmdPulseMask == cmdPulseMask {
			return cmd&cmdPulseLines&outResetDeasserted == 0, -1
		}
		word, bit := cmd/64, uint64(1)<<(cmd%64)
		if c.unknown[word]&bit == 0 {
			c.unknown[word] |= bit
			return false, int(cmd)
		}
	}
	return false, -1
}

// dataLocked handles a write to the data port and reports whether the
// guest asked for a reset.
func (c *Controller) dataLocked(v byte) (reset bool) {
	c.lastCmd = false
	cmd := c.pending
	c.pending = cmdNone
	switch cmd {
	case cmdWriteCommandByte:
		c.cmdByte = v
	case cmdWriteOutputPort:
		c.outPort = v
		return v&outResetDeasserted == 0
	case cmdWriteKbdBuffer, cmdWriteAuxBuffer:
		// Loop the byte back as if the device had sent it.
		c.pushLocked(v)
	case cmdWriteAux:
		// There is no mouse: the byte goes nowhere and gets no answer.
	default:
		c.keyboardLocked(v)
	}
	return false
}

// keyboardLocked answers a byte sent to the keyboard.
func (c *Controller) keyboardLocked(v byte) {
	c.kbdData = true
	switch v {
	case kbdReset:
		c.pushLocked(kbdAck, kbdSelfTest)
	case kbdGetID:
		c.pushLocked(kbdAck, kbdID0, kbdID1)
	case kbdEcho:
		c.pushLocked(kbdEcho)
	default:
		c.pushLocked(kbdAck)
	}
}

// pushLocked queues bytes for the guest, dropping what does not fit.
func (c *Controller) pushLocked(bs ...byte) {
	for _, b := range bs {
		if c.count == queueLen {
			c.dropped = true
			return
		}
		c.queue[(c.head+c.count)%queueLen] = b
		c.count++
	}
}

// popLocked takes the oldest queued byte; an empty buffer reads 0.
func (c *Controller) popLocked() byte {
	if c.count == 0 {
		return 0
	}
	b := c.queue[c.head]
	c.head = (c.head + 1) % queueLen
	c.count--
	if c.count == 0 {
		c.kbdData = false
	}
	return b
}

func fill(data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}
