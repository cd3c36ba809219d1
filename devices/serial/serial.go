// Package serial emulates a 16550A UART, the guest's serial console.
//
// Transmission is instantaneous: a byte written to THR goes straight to an
// io.Writer and the transmitter is empty again, so THRE and TEMT are
// always set. Host input enters the receive FIFO through Enqueue, which
// takes only what fits; Ready tells the feeder when to try again, so input
// waits on the host side instead of piling up in memory.
//
// Interrupts are edges: the device calls Trigger whenever an enabled
// interrupt condition becomes pending. A guest that leaves a condition
// pending sees no repeat, as with the edge-triggered ISA line of a PC.
package serial

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/gvmm-dev/gvmm/devices"
)

// Size is the number of ports the UART decodes.
const Size = 8

// Register offsets from the UART's base.
const (
	regData = 0 // RBR on read, THR on write; DLL when LCR.DLAB is set
	regIER  = 1 // DLM when LCR.DLAB is set
	regIIR  = 2 // IIR on read, FCR on write
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7
)

// IER bits. The interrupt conditions are kept in the same bit positions,
// so "enabled and pending" is a single AND.
const (
	ierERBFI = 0x01 // received data available (and character timeout)
	ierETBEI = 0x02 // transmitter holding register empty
	ierELSI  = 0x04 // receiver line status
	ierEDSSI = 0x08 // modem status
	ierMask  = ierERBFI | ierETBEI | ierELSI | ierEDSSI
)

// IIR values, in priority order, and the FIFO-enabled bits.
const (
	iirNone        = 0x01
	iirLineStatus  = 0x06
	iirRxData      = 0x04
	iirCharTimeout = 0x0c
	iirTHREmpty    = 0x02
	iirModemStatus = 0x00
	iirFIFOEnabled = 0xc0
)

// FCR bits.
const (
	fcrEnable     = 0x01
	fcrClearRx    = 0x02
	fcrClearTx    = 0x04
	fcrDMAMode    = 0x08
	fcrTriggerMsk = 0xc0
	// fcrStored are the FCR bits that persist; the clear bits self-clear.
	fcrStored = fcrEnable | fcrDMAMode | fcrTriggerMsk
)

// LCR bits.
const lcrDLAB = 0x80

// MCR bits.
const (
	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = mcrDTR | mcrRTS | mcrOUT1 | mcrOUT2 | mcrLoop
)

// LSR bits. Parity, framing and break errors cannot happen on a virtual
// line, so of the error bits only OE is ever set.
const (
	lsrDR   = 0x01
	lsrOE   = 0x02
	lsrTHRE = 0x20
	lsrTEMT = 0x40
)

// MSR bits: deltas in the low nibble, line states in the high one.
const (
	msrDCTS = 0x01
	msrDDSR = 0x02
	msrTERI = 0x04 // RI went from asserted to deasserted
	msrDDCD = 0x08
	msrCTS  = 0x10
	msrDSR  = 0x20
	msrRI   = 0x40
	msrDCD  = 0x80
)

// rxFIFOSize is the receive FIFO depth with FCR.enable set: larger than the
// 16550A's 16 bytes to take a pasted line in fewer exits, and invisible to
// the guest, which learns nothing of the depth from the registers. With the
// FIFO disabled the UART holds a single byte, as a 16450 does.
const rxFIFOSize = 64

// defaultDivisor is the power-on divisor latch (115200 baud). It must not
// be zero: Linux's probe_baud divides by it when console= has no options.
const defaultDivisor = 1

// rxTriggerLevels maps FCR bits 7:6 to the receive trigger level.
var rxTriggerLevels = [4]int{1, 4, 8, 14}

// Serial is a 16550A UART. It is safe for concurrent use by vCPU threads
// and an input goroutine.
type Serial struct {
	irq devices.Interrupt
	log *slog.Logger

	// outMu orders transmitted bytes. It is taken before mu is released
	// so the bytes leave in THR-write order without the writer running
	// under mu (a slow console must not stall reads of other registers).
	outMu sync.Mutex
	out   io.Writer

	outErrLogged atomic.Bool
	irqErrLogged atomic.Bool

	// ready has room for one token; a token means the receive FIFO may
	// have room again.
	ready chan struct{}

	mu          sync.Mutex
	ier         byte
	fcr         byte
	lcr         byte
	mcr         byte
	scr         byte
	dll, dlm    byte
	overrun     bool
	msrDelta    byte
	thrIPending bool // the THR-empty interrupt has not been acknowledged
	lastPending byte // enabled conditions pending after the last access
	rx          fifo
}

var _ devices.Device = (*Serial)(nil)

// New returns a UART in its power-on state that raises irq and transmits
// to out. A nil log discards log lines.
func New(irq devices.Interrupt, out io.Writer, log *slog.Logger) *Serial {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Serial{
		irq:   irq,
		out:   out,
		log:   log,
		ready: make(chan struct{}, 1),
		dll:   defaultDivisor,
	}
}

// Read implements devices.Device. Only byte accesses to offsets 0-7 are
// decoded; anything else reads as all-ones.
func (s *Serial) Read(offset uint64, data []byte) {
	if len(data) != 1 || offset >= Size {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	s.mu.Lock()
	data[0] = s.readReg(offset)
	raise := s.update()
	s.mu.Unlock()
	if raise {
		s.trigger()
	}
}

// Write implements devices.Device. Accesses that are not single bytes at
// offsets 0-7 are ignored.
func (s *Serial) Write(offset uint64, data []byte) {
	if len(data) != 1 || offset >= Size {
		return
	}
	s.mu.Lock()
	b, send := s.writeReg(offset, data[0])
	raise := s.update()
	if send {
		s.outMu.Lock()
	}
	s.mu.Unlock()
	if send {
		s.transmit(b)
		s.outMu.Unlock()
	}
	if raise {
		s.trigger()
	}
}

func (s *Serial) readReg(offset uint64) byte {
	dlab := s.lcr&lcrDLAB != 0
	switch offset {
	case regData:
		if dlab {
			return s.dll
		}
		b := s.rx.pop()
		s.signalRoom()
		return b
	case regIER:
		if dlab {
			return s.dlm
		}
		return s.ier
	case regIIR:
		return s.readIIR()
	case regLCR:
		return s.lcr
	case regMCR:
		return s.mcr
	case regLSR:
		v := byte(lsrTHRE | lsrTEMT)
		if s.rx.len() > 0 {
			v |= lsrDR
		}
		if s.overrun {
			v |= lsrOE
		}
		s.overrun = false // reading LSR clears the error bits
		return v
	case regMSR:
		v := s.modemLines() | s.msrDelta
		s.msrDelta = 0
		return v
	default: // regSCR
		return s.scr
	}
}

// readIIR reports the highest-priority enabled pending interrupt. As on
// the chip, reporting THR empty acknowledges it.
func (s *Serial) readIIR() byte {
	var id byte
	switch p := s.pending(); {
	case p&ierELSI != 0:
		id = iirLineStatus
	case p&ierERBFI != 0:
		id = iirRxData
		if s.fifoEnabled() && s.rx.len() < s.triggerLevel() {
			// Below the trigger level the 16550A reports a character
			// timeout after four idle character times. Host input arrives
			// in bursts with no line timing, so that time has passed.
			id = iirCharTimeout
		}
	case p&ierETBEI != 0:
		id = iirTHREmpty
		s.thrIPending = false
	case p&ierEDSSI != 0:
		id = iirModemStatus
	default:
		id = iirNone
	}
	if s.fifoEnabled() {
		id |= iirFIFOEnabled
	}
	return id
}

// writeReg applies a register write. It returns the byte to transmit, if
// any, for the caller to send after releasing mu.
func (s *Serial) writeReg(offset uint64, v byte) (b byte, send bool) {
	dlab := s.lcr&lcrDLAB != 0
	switch offset {
	case regData:
		if dlab {
			s.dll = v
			return 0, false
		}
		// Writing THR acknowledges THR empty; the byte leaves at once and
		// THR is empty again, which is a fresh edge for the guest.
		s.lastPending &^= ierETBEI
		s.thrIPending = true
		if s.mcr&mcrLoop != 0 {
			s.loopback(v)
			return 0, false
		}
		return v, true
	case regIER:
		if dlab {
			s.dlm = v
			return 0, false
		}
		old := s.ier
		s.ier = v & ierMask
		// Enabling ETBEI while THR is empty (always, here) raises the
		// interrupt anew; Linux's startup test for buggy UARTs relies on it.
		if s.ier&^old&ierETBEI != 0 {
			s.thrIPending = true
		}
	case regIIR:
		s.writeFCR(v)
	case regLCR:
		s.lcr = v
	case regMCR:
		s.writeMCR(v)
	case regLSR, regMSR:
		// Read-only: the datasheet leaves writes for factory test.
	default: // regSCR
		s.scr = v
	}
	return 0, false
}

func (s *Serial) writeFCR(v byte) {
	if (v^s.fcr)&fcrEnable != 0 {
		// Switching between FIFO and 16450 mode empties the FIFOs.
		s.rx.clear()
		s.signalRoom()
	}
	if v&fcrEnable == 0 {
		// The other bits are programmed only together with the enable bit.
		s.fcr = 0
		return
	}
	if v&fcrClearRx != 0 {
		s.rx.clear()
		s.signalRoom()
	}
	// fcrClearTx has nothing to clear: transmission is instantaneous.
	s.fcr = v & fcrStored
}

func (s *Serial) writeMCR(v byte) {
	oldLines := s.modemLines()
	wasLoop := s.mcr&mcrLoop != 0
	s.mcr = v & mcrMask
	newLines := s.modemLines()
	changed := oldLines ^ newLines
	if changed&msrCTS != 0 {
		s.msrDelta |= msrDCTS
	}
	if changed&msrDSR != 0 {
		s.msrDelta |= msrDDSR
	}
	if changed&msrDCD != 0 {
		s.msrDelta |= msrDDCD
	}
	if oldLines&msrRI != 0 && newLines&msrRI == 0 {
		s.msrDelta |= msrTERI
	}
	if wasLoop && s.mcr&mcrLoop == 0 {
		s.signalRoom() // the receiver is connected to the host again
	}
}

// modemLines returns the MSR line-state bits. In loopback they mirror MCR;
// otherwise the virtual modem is always ready (CTS, DSR and DCD asserted)
// so that getty and the console driver do not wait for carrier.
func (s *Serial) modemLines() byte {
	if s.mcr&mcrLoop == 0 {
		return msrCTS | msrDSR | msrDCD
	}
	var v byte
	if s.mcr&mcrRTS != 0 {
		v |= msrCTS
	}
	if s.mcr&mcrDTR != 0 {
		v |= msrDSR
	}
	if s.mcr&mcrOUT1 != 0 {
		v |= msrRI
	}
	if s.mcr&mcrOUT2 != 0 {
		v |= msrDCD
	}
	return v
}

// loopback receives a byte the guest transmitted in loopback mode. A full
// FIFO drops it and flags an overrun, as the chip does.
func (s *Serial) loopback(v byte) {
	if s.rx.len() >= s.rxCapacity() {
		s.overrun = true
		return
	}
	s.rx.push(v)
}

func (s *Serial) fifoEnabled() bool { return s.fcr&fcrEnable != 0 }

func (s *Serial) triggerLevel() int { return rxTriggerLevels[s.fcr>>6] }

func (s *Serial) rxCapacity() int {
	if s.fifoEnabled() {
		return rxFIFOSize
	}
	return 1
}

// pending returns the interrupt conditions that are pending and enabled,
// as IER bits.
func (s *Serial) pending() byte {
	var p byte
	if s.rx.len() > 0 {
		p |= ierERBFI
	}
	if s.thrIPending {
		p |= ierETBEI
	}
	if s.overrun {
		p |= ierELSI
	}
	if s.msrDelta != 0 {
		p |= ierEDSSI
	}
	return p & s.ier
}

// update records the pending conditions and reports whether any became
// pending since the last access: an edge the guest must be sent.
func (s *Serial) update() bool {
	p := s.pending()
	rose := p&^s.lastPending != 0
	s.lastPending = p
	return rose
}

func (s *Serial) trigger() {
	if err := s.irq.Trigger(); err != nil && s.irqErrLogged.CompareAndSwap(false, true) {
		s.log.Error("serial: raising interrupt failed; further failures not logged", "err", err)
	}
}

// transmit sends a byte to the console. A failing console loses output
// but never stops the guest.
func (s *Serial) transmit(b byte) {
	if _, err := s.out.Write([]byte{b}); err != nil && s.outErrLogged.CompareAndSwap(false, true) {
		s.log.Warn("serial: console write failed; output is being lost, further failures not logged", "err", err)
	}
}

// signalRoom tells a waiting feeder that the receive FIFO may have room.
func (s *Serial) signalRoom() {
	select {
	case s.ready <- struct{}{}:
	default: // a token is already waiting
	}
}

// Enqueue puts host input into the receive FIFO and returns how many bytes
// of p it took. It takes fewer than len(p) when the FIFO is full or, in
// loopback mode, none at all because the receiver is disconnected from the
// line; wait on Ready before offering the rest.
func (s *Serial) Enqueue(p []byte) int {
	s.mu.Lock()
	n := 0
	if s.mcr&mcrLoop == 0 {
		for n < len(p) && s.rx.len() < s.rxCapacity() {
			s.rx.push(p[n])
			n++
		}
	}
	raise := s.update()
	s.mu.Unlock()
	if raise {
		s.trigger()
	}
	return n
}

// Ready returns a channel that receives a value after the receive FIFO may
// have gained room. Wake-ups can be spurious: call Enqueue again and wait
// again if it takes nothing. No wake-up is lost between a short Enqueue
// and the wait.
func (s *Serial) Ready() <-chan struct{} { return s.ready }

// Pump feeds r to the guest until r reports EOF (it returns nil), ctx ends
// (it returns ctx.Err()) or reading fails. It holds back input while the
// guest is not reading, so at most one read of r is buffered. A Read of r
// that blocks is not interrupted by ctx; close r to stop such a Pump.
func (s *Serial) Pump(ctx context.Context, r io.Reader) error {
	buf := make([]byte, rxFIFOSize)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := r.Read(buf)
		for p := buf[:n]; len(p) > 0; {
			p = p[s.Enqueue(p):]
			if len(p) == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.ready:
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("serial: reading console input: %w", rerr)
		}
	}
}

// fifo is a fixed ring of received bytes.
type fifo struct {
	buf  [rxFIFOSize]byte
	head int
	n    int
}

func (f *fifo) len() int { return f.n }

// push appends b; the caller checks capacity first.
func (f *fifo) push(b byte) {
	f.buf[(f.head+f.n)%len(f.buf)] = b
	f.n++
}

// pop removes the oldest byte; an empty FIFO reads as zero.
func (f *fifo) pop() byte {
	if f.n == 0 {
		return 0
	}
	b := f.buf[f.head]
	f.head = (f.head + 1) % len(f.buf)
	f.n--
	return b
}

func (f *fifo) clear() { f.head, f.n = 0, 0 }
