package machine

import (
	"fmt"
	"time"
)

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

// Pause stops every vCPU outside the guest until Resume, then quiesces
// the disks: the request in progress completes (a discard or write-zeroes
// pauses between chunks instead), no other starts, and the images are
// synced. A copy of the images is then consistent, as after a
// crash at that instant (QEMU's stop drains and flushes alike).
func (m *Machine) Pause() error {
	m.pauseMu.Lock()
	defer m.pauseMu.Unlock()
	b := m.current()
	if b == nil {
		return ErrNotRunning
	}
	if err := b.gate.pause(len(b.vcpus), b.kick); err != nil {
		return err
	}
	for i, d := range m.disks {
		if err := d.Quiesce(); err != nil {
			m.releaseDisks()
			_ = b.gate.resume() // paused above, so it cannot fail
			return fmt.Errorf("machine: quiescing disk %s: %w", m.cfg.Disks[i].Path, err)
		}
	}
	return nil
}

// Resume lets a paused guest run again.
func (m *Machine) Resume() error {
	m.pauseMu.Lock()
	defer m.pauseMu.Unlock()
	b := m.current()
	if b == nil {
		return ErrNotRunning
	}
	if !b.gate.isPaused() {
		return ErrState
	}
	m.releaseDisks()
	return b.gate.resume()
}

func (m *Machine) releaseDisks() {
	for _, d := range m.disks {
		d.Release()
	}
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
