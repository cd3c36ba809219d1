package uart

import (
	"fmt"

	"github.com/gvmm-dev/gvmm/devices"
)

// State is the UART's guest-visible state, for snapshots.
type State struct {
	IER, LCR, MCR, LSR, MSR, SCR, FCR byte
	Divisor                           uint16
	THRInterrupt                      bool   // a THR-empty interrupt is pending
	RX                                []byte // the receive FIFO, oldest first
}

// State returns the UART's state.
func (u *UART) State() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := State{IER: u.ier, LCR: u.lcr, MCR: u.mcr, LSR: u.lsr, MSR: u.msr, SCR: u.scr, FCR: u.fcr,
		Divisor: u.divisor, THRInterrupt: u.thrIRQ, RX: make([]byte, u.rxLen)}
	for i := range s.RX {
		s.RX[i] = u.rx[(u.rxHead+i)%fifoSize]
	}
	return s
}

// Restore puts the UART in state s, which it validates as untrusted.
func (u *UART) Restore(s State) error {
	switch {
	case len(s.RX) > fifoSize:
		return fmt.Errorf("uart: %w: %d bytes in a %d-byte FIFO", devices.ErrBadState, len(s.RX), fifoSize)
	case s.IER&^ierMask != 0 || s.MCR&^mcrMask != 0:
		return fmt.Errorf("uart: %w: IER %#x, MCR %#x", devices.ErrBadState, s.IER, s.MCR)
	case (len(s.RX) > 0) != (s.LSR&lsrDR != 0):
		return fmt.Errorf("uart: %w: LSR %#x with %d bytes received", devices.ErrBadState, s.LSR, len(s.RX))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ier, u.lcr, u.mcr, u.lsr, u.msr, u.scr, u.fcr = s.IER, s.LCR, s.MCR, s.LSR, s.MSR, s.SCR, s.FCR
	u.divisor, u.thrIRQ = s.Divisor, s.THRInterrupt
	u.rxHead, u.rxLen = 0, copy(u.rx[:], s.RX)
	return nil
}
