package ps2

import (
	"fmt"

	"github.com/gvmm-dev/gvmm/devices"
)

// State is the controller's guest-visible state, for snapshots.
type State struct {
	Output         []byte // bytes waiting for the guest, oldest first
	CommandByte    byte
	OutputPort     byte
	PendingCommand byte // a command waiting for its parameter byte, or 0
	LastWasCommand bool
	KeyboardData   bool // the output holds the keyboard's answer
}

// State returns the controller's state.
func (c *Controller) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := State{CommandByte: c.cmdByte, OutputPort: c.outPort, PendingCommand: c.pending,
		LastWasCommand: c.lastCmd, KeyboardData: c.kbdData, Output: make([]byte, c.count)}
	for i := range s.Output {
		s.Output[i] = c.queue[(c.head+i)%queueLen]
	}
	return s
}

// Restore puts the controller in state s, which it validates as untrusted.
func (c *Controller) Restore(s State) error {
	switch s.PendingCommand {
	case cmdNone, cmdWriteCommandByte, cmdWriteOutputPort, cmdWriteKbdBuffer, cmdWriteAuxBuffer, cmdWriteAux:
	default:
		return fmt.Errorf("i8042: %w: pending command %#x takes no parameter", devices.ErrBadState, s.PendingCommand)
	}
	if len(s.Output) > queueLen {
		return fmt.Errorf("i8042: %w: %d bytes in a %d-byte buffer", devices.ErrBadState, len(s.Output), queueLen)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cmdByte, c.outPort, c.pending, c.lastCmd = s.CommandByte, s.OutputPort, s.PendingCommand, s.LastWasCommand
	c.head, c.count = 0, copy(c.queue[:], s.Output)
	c.kbdData = s.KeyboardData && c.count > 0
	c.dropped, c.reported = false, false
	return nil
}
