package machine

import (
	"errors"
	"sync"
)

// ErrNotRunning is returned by calls that need a running guest.
var ErrNotRunning = errors.New("machine is not running")

// ErrState is returned for a pause of a paused machine and the like.
var ErrState = errors.New("machine is not in a state that allows this")

// pauseGate parks vCPU threads outside KVM_RUN while the machine is
// paused: the guest executes nothing, its devices stay as they are.
type pauseGate struct {
	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	ended  bool
	parked int
}

func newPauseGate() *pauseGate {
	g := &pauseGate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// wait blocks the calling vCPU thread while the machine is paused and
// reports whether it did block.
func (g *pauseGate) wait() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.paused || g.ended {
		return false
	}
	g.parked++
	g.cond.Broadcast()
	for g.paused && !g.ended {
		g.cond.Wait()
	}
	g.parked--
	return true
}

// end releases every parked thread for good.
func (g *pauseGate) end() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ended = true
	g.cond.Broadcast()
}

// pause marks the machine paused, calls kick to get the vCPUs out of
// the guest, and waits until all n are parked.
func (g *pauseGate) pause(n int, kick func()) error {
	g.mu.Lock()
	if g.paused {
		g.mu.Unlock()
		return ErrState
	}
	g.paused = true
	g.mu.Unlock()
	kick()
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.parked < n && !g.ended {
		g.cond.Wait()
	}
	if g.ended {
		return ErrNotRunning
	}
	return nil
}

func (g *pauseGate) resume() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.paused {
		return ErrState
	}
	g.paused = false
	g.cond.Broadcast()
	return nil
}

func (g *pauseGate) isPaused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused
}

// startPaused marks a gate whose vCPU threads have not started yet as
// paused: each parks at its first KVM_RUN (see runVCPU).
func (g *pauseGate) startPaused() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paused = true
}
