// Package uart emulates a 16550A UART: the serial console of the guest.
// Bytes the guest transmits go to an io.Writer at once (there is no baud
// rate to honour); bytes from the host enter a bounded receive FIFO with
// back-pressure. Register layout and bits follow the PC16550D data sheet.
package uart

import (
	"context"
	"io"
	"log/slog"
	"sync"

	"github.com/gvmm-dev/gvmm/devices"
)

// Register offsets from the base port.
const (
	regData = 0 // RBR (read), THR (write); DLL when DLAB is set
	regIER  = 1 // interrupt enable; DLM when DLAB is set
	regIIR  = 2 // interrupt identification (read), FIFO control (write)
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7

	// Size is the number of ports the UART decodes.
	Size = 8
)

// IER bits.
const (
	ierRxData     = 1 << 0
	ierTHREmpty   = 1 << 1
	ierLineStatus = 1 << 2
	ierModem      = 1 << 3
	ierMask       = 0x0f
)

// IIR values: bit 0 set means no interrupt; FIFO-enabled bits on top.
const (
	iirNone       = 0x01
	iirModem      = 0x00
	iirTHREmpty   = 0x02
	iirRxData     = 0x04
	iirLineStatus = 0x06
	iirFIFOs      = 0xc0
)

// FCR bits.
const (
	fcrEnable  = 1 << 0
	fcrClearRx = 1 << 1
	fcrClearTx = 1 << 2
)

// LCR, MCR, LSR and MSR bits.
const (
	lcrDLAB  = 1 << 7
	mcrDTR   = 1 << 0
	mcrRTS   = 1 << 1
	mcrOUT1  = 1 << 2
	mcrOUT2  = 1 << 3
	mcrLoop  = 1 << 4
	mcrMask  = 0x1f
	lsrDR    = 1 << 0
	lsrOE    = 1 << 1
	lsrTHRE  = 1 << 5
	lsrTEMT  = 1 << 6
	msrDCTS  = 1 << 0
	msrDDSR  = 1 << 1
	msrTERI  = 1 << 2
	msrDDCD  = 1 << 3
	msrCTS   = 1 << 4
	msrDSR   = 1 << 5
	msrRI    = 1 << 6
	msrDCD   = 1 << 7
	msrDelta = 0x0f
)

// fifoSize bounds the receive FIFO. The 16550A has 16 bytes; a larger
// one costs nothing and cuts interrupts for pasted input.
const fifoSize = 64

// defaultDivisor is 115200 baud from the 1.8432 MHz clock.
const defaultDivisor = 1

// UART is a 16550A. It is safe for concurrent use.
type UART struct {
	irq devices.Interrupt
	out io.Writer
	log *slog.Logger

	mu       sync.Mutex
	ier      byte
	lcr      byte
	mcr      byte
	lsr      byte
	msr      byte
	scr      byte
	fcr      byte
	divisor  uint16
	thrIRQ   bool // a THR-empty interrupt is pending
	rx       [fifoSize]byte
	rxHead   int
	rxLen    int
	writeErr bool
	tx       [1]byte       // the byte being sent: a []byte{v} literal would escape through out
	room     chan struct{} // signalled when the guest drains the FIFO
}

var _ devices.Device = (*UART)(nil)

// New returns a UART that raises irq and transmits to out.
func New(irq devices.Interrupt, out io.Writer, log *slog.Logger) *UART {
	return &UART{
		irq:     irq,
		out:     out,
		log:     log,
		lsr:     lsrTHRE | lsrTEMT,
		msr:     msrCTS | msrDSR | msrDCD, // a connected modem: consoles wait for carrier
		divisor: defaultDivisor,
		room:    make(chan struct{}, 1),
	}
}

// pendingLocked returns the highest-priority enabled interrupt.
func (u *UART) pendingLocked() byte {
	switch {
	case u.ier&ierLineStatus != 0 && u.lsr&lsrOE != 0:
		return iirLineStatus
	case u.ier&ierRxData != 0 && u.rxLen > 0:
		return iirRxData
	case u.ier&ierTHREmpty != 0 && u.thrIRQ:
		return iirTHREmpty
	case u.ier&ierModem != 0 && u.msr&msrDelta != 0:
		return iirModem
	}
	return iirNone
}

// trigger raises the interrupt line when the guest has to look. It runs
// outside the lock: the line is a system call.
func (u *UART) trigger(raise bool) {
	if !raise {
		return
	}
	if err := u.irq.Trigger(); err != nil {
		u.log.Warn("uart: raising the interrupt", "err", err)
	}
}

// Read implements devices.Device.
func (u *UART) Read(offset uint64, data []byte) {
	if len(data) != 1 || offset >= Size {
		fill(data)
		return
	}
	u.mu.Lock()
	v, drained := u.readLocked(offset)
	u.mu.Unlock()
	data[0] = v
	if drained {
		u.signalRoom()
	}
}

// signalRoom wakes a Receive waiting for the guest.
func (u *UART) signalRoom() {
	select {
	case u.room <- struct{}{}:
	default:
	}
}

func (u *UART) readLocked(offset uint64) (v byte, drained bool) {
	dlab := u.lcr&lcrDLAB != 0
	switch offset {
	case regData:
		if dlab {
			return byte(u.divisor), false
		}
		if u.rxLen == 0 {
			return 0, false
		}
		v = u.rx[u.rxHead]
		u.rxHead = (u.rxHead + 1) % fifoSize
		u.rxLen--
		if u.rxLen == 0 {
			u.lsr &^= lsrDR
		}
		return v, true
	case regIER:
		if dlab {
			return byte(u.divisor >> 8), false
		}
		return u.ier, false
	case regIIR:
		v = u.pendingLocked()
		// Reading IIR while it reports THR empty acknowledges it.
		if v == iirTHREmpty {
			u.thrIRQ = false
		}
		if u.fcr&fcrEnable != 0 {
			v |= iirFIFOs
		}
		return v, false
	case regLCR:
		return u.lcr, false
	case regMCR:
		return u.mcr, false
	case regLSR:
		v = u.lsr
		u.lsr &^= lsrOE // overrun is cleared by reading LSR
		return v, false
	case regMSR:
		v = u.msr
		u.msr &^= msrDelta
		return v, false
	default: // regSCR
		return u.scr, false
	}
}

// Write implements devices.Device.
func (u *UART) Write(offset uint64, data []byte) {
	if len(data) != 1 || offset >= Size {
		return
	}
	u.mu.Lock()
	before := u.pendingLocked()
	u.writeLocked(offset, data[0])
	after := u.pendingLocked()
	u.mu.Unlock()
	// A new condition, or THR empty again after a write, interrupts.
	u.trigger(after != iirNone && (after != before || (offset == regData && after == iirTHREmpty)))
}

func (u *UART) writeLocked(offset uint64, v byte) {
	dlab := u.lcr&lcrDLAB != 0
	switch offset {
	case regData:
		if dlab {
			u.divisor = u.divisor&0xff00 | uint16(v)
			return
		}
		u.transmitLocked(v)
		// Transmission is instantaneous: THR is empty again at once.
		u.thrIRQ = true
	case regIER:
		if dlab {
			u.divisor = u.divisor&0x00ff | uint16(v)<<8
			return
		}
		// Enabling the THR-empty interrupt while THR is empty raises it;
		// Linux's transmit path relies on that.
		if v&ierTHREmpty != 0 && u.ier&ierTHREmpty == 0 {
			u.thrIRQ = true
		}
		u.ier = v & ierMask
		if u.listeningLocked() {
			u.signalRoom()
		}
	case regIIR: // FCR
		if v&fcrClearRx != 0 {
			u.rxHead, u.rxLen = 0, 0
			u.lsr &^= lsrDR
		}
		u.fcr = v &^ (fcrClearRx | fcrClearTx)
	case regLCR:
		u.lcr = v
	case regMCR:
		u.setMCRLocked(v & mcrMask)
		if u.listeningLocked() {
			u.signalRoom()
		}
	case regLSR, regMSR:
		// Read-only on the 16550A (factory test only).
	default: // regSCR
		u.scr = v
	}
}

// setMCRLocked updates the modem control lines; in loopback the modem
// status inputs follow them, with delta bits for changes.
func (u *UART) setMCRLocked(v byte) {
	u.mcr = v
	var status byte
	if v&mcrLoop != 0 {
		if v&mcrRTS != 0 {
			status |= msrCTS
		}
		if v&mcrDTR != 0 {
			status |= msrDSR
		}
		if v&mcrOUT1 != 0 {
			status |= msrRI
		}
		if v&mcrOUT2 != 0 {
			status |= msrDCD
		}
	} else {
		status = msrCTS | msrDSR | msrDCD
	}
	old := u.msr
	changed := (old ^ status) & 0xf0
	var delta byte
	if changed&msrCTS != 0 {
		delta |= msrDCTS
	}
	if changed&msrDSR != 0 {
		delta |= msrDDSR
	}
	if old&msrRI != 0 && status&msrRI == 0 { // trailing edge of RI
		delta |= msrTERI
	}
	if changed&msrDCD != 0 {
		delta |= msrDDCD
	}
	u.msr = status | (old & msrDelta) | delta
}

// transmitLocked sends a byte: out of the port, or back to the receiver
// in loopback mode.
func (u *UART) transmitLocked(v byte) {
	if u.mcr&mcrLoop != 0 {
		u.pushLocked([]byte{v})
		return
	}
	u.tx[0] = v
	if _, err := u.out.Write(u.tx[:]); err != nil && !u.writeErr {
		u.writeErr = true // once: a closed console must not flood the log
		u.log.Warn("uart: console output failed; dropping output", "err", err)
	}
}

// pushLocked appends to the receive FIFO and returns how many bytes fit;
// a byte arriving at a full FIFO in loopback is an overrun.
func (u *UART) pushLocked(p []byte) int {
	n := 0
	for _, b := range p {
		if u.rxLen == fifoSize {
			if u.mcr&mcrLoop != 0 {
				u.lsr |= lsrOE
			}
			break
		}
		u.rx[(u.rxHead+u.rxLen)%fifoSize] = b
		u.rxLen++
		n++
	}
	if u.rxLen > 0 {
		u.lsr |= lsrDR
	}
	return n
}

// listeningLocked says whether a driver takes input. Input waits in the
// host until then: the guest clears the FIFO while it probes and opens
// the port, which would lose what came before. A driver that wants input
// enables the receive interrupt and, on a PC, OUT2, which connects the
// UART's interrupt line; Linux's probe sets IER alone, briefly. In
// loopback the line is disconnected.
func (u *UART) listeningLocked() bool {
	return u.ier&ierRxData != 0 && u.mcr&(mcrOUT2|mcrLoop) == mcrOUT2
}

// Receive delivers host input to the guest. It blocks while the FIFO is
// full or no driver listens, and returns ctx's error if ctx ends first.
func (u *UART) Receive(ctx context.Context, p []byte) error {
	for len(p) > 0 {
		u.mu.Lock()
		before := u.pendingLocked()
		n := 0
		if u.listeningLocked() {
			n = u.pushLocked(p)
		}
		after := u.pendingLocked()
		u.mu.Unlock()
		u.trigger(n > 0 && after != iirNone && (after != before || after == iirRxData))
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
		select {
		case <-u.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func fill(data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}
