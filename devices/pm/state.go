package pm

import (
	"fmt"

	"github.com/gvmm-dev/gvmm/devices"
)

// State is the PM1a block's state, for snapshots.
type State struct {
	Status, Enable, Control uint16
	PoweredOff              bool
}

// State returns the block's state.
func (p *PM) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return State{Status: p.status, Enable: p.enable, Control: p.control, PoweredOff: p.poweredOff}
}

// Restore puts the block in state s, which it validates as untrusted.
// An event pending in s is raised again: the interrupt controller it was
// raised on before has been replaced too.
func (p *PM) Restore(s State) error {
	if s.Status&^statusBits != 0 || s.Enable&^enableBits != 0 || s.Control&^controlBits != 0 {
		return fmt.Errorf("pm: %w: PM1_STS %#x, PM1_EN %#x, PM1_CNT %#x", devices.ErrBadState, s.Status, s.Enable, s.Control)
	}
	p.mu.Lock()
	p.status, p.enable, p.control, p.poweredOff = s.Status, s.Enable, s.Control, s.PoweredOff
	raise := p.asserted()
	p.mu.Unlock()
	if raise {
		return p.sci.Trigger()
	}
	return nil
}
