package virtiotest

import (
	"sync/atomic"
	"time"

	"github.com/gvmm-dev/gvmm/devices"
)

var _ devices.Interrupt = (*Interrupt)(nil)

// Interrupt counts triggers and lets a test wait for the next one.
type Interrupt struct {
	n     atomic.Int64
	fired chan struct{}
}

// NewInterrupt returns an Interrupt that has not fired.
func NewInterrupt() *Interrupt { return &Interrupt{fired: make(chan struct{}, 1)} }

// Trigger implements devices.Interrupt.
func (i *Interrupt) Trigger() error {
	i.n.Add(1)
	select {
	case i.fired <- struct{}{}:
	default:
	}
	return nil
}

// Count returns how often the interrupt fired.
func (i *Interrupt) Count() int { return int(i.n.Load()) }

// Wait waits up to d for a trigger not yet waited for.
func (i *Interrupt) Wait(d time.Duration) bool {
	select {
	case <-i.fired:
		return true
	case <-time.After(d):
		return false
	}
}
