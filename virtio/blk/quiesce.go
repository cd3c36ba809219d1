package blk

import (
	"context"
	"errors"
	"sync"
)

// ErrQuiesced is returned by Quiesce on a disk already quiesced.
var ErrQuiesced = errors.New("disk already quiesced")

// ioGate lets Quiesce wait for the request in progress and hold back the
// next ones without stopping the queue workers, which a device reset must
// still be able to end.
type ioGate struct {
	mu   sync.Mutex
	idle sync.Cond // on mu; signalled when busy drops to 0
	busy int       // requests being executed
	held chan struct{}
}

// enter marks a request as started, first waiting while the disk is
// quiesced; it reports false if ctx ended meanwhile.
func (g *ioGate) enter(ctx context.Context) bool {
	for {
		g.mu.Lock()
		held := g.held
		if held == nil {
			g.busy++
			g.mu.Unlock()
			return true
		}
		g.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return false
		}
	}
}

// yield steps out of the gate while the disk is quiesced, so that
// Quiesce need not wait for the rest of a long request, and back in on
// Release. It returns ctx's error if ctx ended: the caller then abandons
// the request, still inside the gate.
func (g *ioGate) yield(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.held != nil && ctx.Err() == nil {
		held := g.held
		if g.busy--; g.busy == 0 {
			g.idle.Broadcast()
		}
		g.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
		}
		g.mu.Lock()
		g.busy++
	}
	return ctx.Err()
}

func (g *ioGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy--; g.busy == 0 {
		g.idle.Broadcast()
	}
}

// Quiesce waits for the request being executed, if any, keeps the queue
// from starting another until Release, and makes everything written so
// far stable in the image (fdatasync). The image then holds the requests
// completed, and part of a discard or write-zeroes in progress, which
// pauses between chunks rather than keep Quiesce waiting: a copy of it is
// consistent as after a crash. Requests the driver queues meanwhile, and
// the rest of one paused, run after Release.
func (d *Disk) Quiesce() error {
	g := &d.gate
	g.mu.Lock()
	if g.held != nil {
		g.mu.Unlock()
		return ErrQuiesced
	}
	g.held = make(chan struct{})
	for g.busy > 0 {
		g.idle.Wait()
	}
	g.mu.Unlock()
	if err := d.sync(); err != nil {
		d.Release()
		return err
	}
	return nil
}

// Release lets a quiesced disk execute requests again; on a disk not
// quiesced it does nothing.
func (d *Disk) Release() {
	g := &d.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != nil {
		close(g.held)
		g.held = nil
	}
}
