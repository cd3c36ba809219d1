package machine

import "time"

// State is a machine's run state.
type State string

const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateStopped State = "stopped"
)

// current returns the running boot of the guest, or nil.
func (m *Machine) current() *bootedVM {
	b := m.cur.Load()
	if b == nil || b.ending.Load() {
		return nil
	}
	return b
}

// State says whether the guest runs, is paused or has ended.
func (m *Machine) State() State {
	b := m.current()
	switch {
	case b == nil:
		return StateStopped
	case b.gate.isPaused():
		return StatePaused
	}
	return StateRunning
}

// Uptime is the time since Start, or zero before it.
func (m *Machine) Uptime() time.Duration {
	if t := m.started.Load(); t != nil {
		return time.Since(*t)
	}
	return 0
}

// Pause stops every vCPU outside the guest until Resume.
func (m *Machine) Pause() error {
	b := m.current()
	if b == nil {
		return ErrNotRunning
	}
	return b.gate.pause(len(b.vcpus), b.kick)
}

// Resume lets a paused guest run again.
func (m *Machine) Resume() error {
	b := m.current()
	if b == nil {
		return ErrNotRunning
	}
	return b.gate.resume()
}

// Shutdown presses the ACPI power button: a guest that handles it shuts
// down cleanly and powers off. Stop is the immediate alternative.
func (m *Machine) Shutdown() error {
	b := m.current()
	if b == nil {
		return ErrNotRunning
	}
	if b.gate.isPaused() {
		return ErrState
	}
	return b.power.PressPowerButton()
}
