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
// crash at that instant (QEMU's stop drains and flushes alike). The
// network devices finish the frame they move and take no other: frames
// for the guest wait in the TAP's queue, which drops beyond its length.
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
	if err := m.quiesce(); err != nil {
		_ = b.gate.resume() // paused above, so it cannot fail
		return err
	}
	return nil
}

// quiesce stops the devices' I/O for a pause, or releases what it
// stopped and fails.
func (m *Machine) quiesce() error {
	for i, d := range m.disks {
		if err := d.Quiesce(); err != nil {
			m.releaseDevices()
			return fmt.Errorf("machine: quiescing disk %s: %w", m.cfg.Disks[i].Path, err)
		}
	}
	for _, n := range m.nets {
		if err := n.dev.Quiesce(); err != nil {
			m.releaseDevices()
			return fmt.Errorf("machine: quiescing the network device on %s: %w", n.tap, err)
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
	m.releaseDevices()
	return b.gate.resume()
}

func (m *Machine) releaseDevices() {
	for _, d := range m.disks {
		d.Release()
	}
	for _, n := range m.nets {
		n.dev.Release()
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
