package machine

import (
	"errors"
	"fmt"
	"time"

	"github.com/gvmm-dev/gvmm/virtio/balloon"
)

// ErrNoBalloon is returned for balloon calls on a machine without one.
var ErrNoBalloon = errors.New("machine has no balloon device")

// BalloonConfig adds a virtio-balloon device.
type BalloonConfig struct {
	// Size is the memory the guest is asked to give up at start, in
	// bytes: the balloon's target (Firecracker's amount_mib).
	Size uint64
}

// statsWait bounds how long BalloonStats waits for fresh statistics.
const statsWait = time.Second

// Config returns the machine's configuration with defaults applied.
func (m *Machine) Config() Config { return m.cfg }

func (m *Machine) openBalloon() error {
	if m.cfg.Balloon == nil {
		return nil
	}
	b, err := balloon.New(balloon.Options{MemoryBytes: m.cfg.Memory, Target: m.cfg.Balloon.Size, Log: m.log})
	if err != nil {
		return fmt.Errorf("%w: balloon: %w", ErrInvalidConfig, err)
	}
	m.balloon = b
	return nil
}

// Balloon reports the balloon's target and the size the guest says it
// has given up, in bytes; ok is false without a balloon device.
func (m *Machine) Balloon() (target, actual uint64, ok bool) {
	if m.balloon == nil {
		return 0, 0, false
	}
	return m.balloon.Target(), m.balloon.Actual(), true
}

// SetBalloon asks the guest to give bytes of its memory to the balloon;
// 0 gives it all back.
func (m *Machine) SetBalloon(bytes uint64) error {
	if m.balloon == nil {
		return ErrNoBalloon
	}
	if err := m.balloon.SetTarget(bytes); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// BalloonStats asks the guest for fresh memory statistics, waits a
// moment for them and returns the latest by name with their time (zero
// if the guest never sent any).
func (m *Machine) BalloonStats() (map[string]uint64, time.Time, error) {
	if m.balloon == nil {
		return nil, time.Time{}, ErrNoBalloon
	}
	_, before, _ := m.balloon.Stats()
	if err := m.balloon.RequestStats(); err == nil {
		for deadline := time.Now().Add(statsWait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, at, _ := m.balloon.Stats(); at.After(before) {
				break
			}
		}
	}
	stats, at, _ := m.balloon.Stats()
	return stats, at, nil
}
