package machine

import (
	"errors"
	"time"
)

// ErrNoBalloon is returned for balloon calls on a machine without one.
var ErrNoBalloon = errors.New("machine has no balloon device")

// Config returns the machine's configuration with defaults applied.
func (m *Machine) Config() Config { return m.cfg }

// Balloon reports the balloon's target and the size the guest says it
// has given up, in bytes; ok is false without a balloon device.
func (m *Machine) Balloon() (target, actual uint64, ok bool) { return 0, 0, false }

// SetBalloon asks the guest to give bytes of its memory to the balloon.
func (m *Machine) SetBalloon(bytes uint64) error { return ErrNoBalloon }

// BalloonStats returns the guest's latest memory statistics by name.
func (m *Machine) BalloonStats() (map[string]uint64, time.Time, error) {
	return nil, time.Time{}, ErrNoBalloon
}
