// Package ratelimit is the token-bucket rate limiter of gvmm's devices,
// with Firecracker's semantics: a device's limit is a pair of buckets, one
// of bytes and one of operations (packets, requests), and an operation
// needs tokens of both. It is built on golang.org/x/time/rate.
package ratelimit

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Bucket is a token bucket: Rate tokens (bytes or operations) a second,
// up to Burst saved while idle. A zero Rate means no limit; a zero Burst
// is one second's worth of Rate.
type Bucket struct {
	Rate  uint64 `json:"rate"`
	Burst uint64 `json:"burst,omitempty"`
}

// Size is the most tokens the bucket holds: Burst, or Rate if Burst is
// zero.
func (b Bucket) Size() uint64 {
	if b.Burst != 0 {
		return b.Burst
	}
	return b.Rate
}

// Limiter is a pair of buckets, bytes and operations. Set may change it
// while a queue runs.
type Limiter struct {
	// mu makes Take's and Set's changes to a bucket's size atomic.
	mu         sync.Mutex
	bytes, ops *rate.Limiter
	// waits and waitedNS count the operations held for tokens and how
	// long, for the metrics.
	waits, waitedNS atomic.Uint64
}

// New returns a Limiter that does not limit until Set.
func New() *Limiter {
	return &Limiter{bytes: rate.NewLimiter(rate.Inf, 0), ops: rate.NewLimiter(rate.Inf, 0)}
}

// Set replaces both buckets; a zero Rate lifts that bucket's limit.
func (l *Limiter) Set(bytes, ops Bucket) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range []struct {
		r *rate.Limiter
		b Bucket
	}{{l.bytes, bytes}, {l.ops, ops}} {
		if p.b.Rate == 0 {
			p.r.SetLimit(rate.Inf)
			continue
		}
		p.r.SetBurst(int(min(p.b.Size(), math.MaxInt32)))
		p.r.SetLimit(rate.Limit(p.b.Rate))
	}
}

// Take spends the tokens of one operation of n bytes and returns how long
// the caller must wait before it may go: the buckets may go into debt,
// never spun on. An operation larger than the byte bucket empties it and
// leaves the rest as debt, as Firecracker's over-consumption does.
// Without limits it does not read the clock, which costs a system call
// where the clock source has no vDSO.
func (l *Limiter) Take(n int) time.Duration {
	if l.bytes.Limit() == rate.Inf && l.ops.Limit() == rate.Inf {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	var d time.Duration
	for _, p := range []struct {
		r *rate.Limiter
		n int
	}{{l.bytes, n}, {l.ops, 1}} {
		if p.r.Limit() == rate.Inf {
			continue
		}
		// rate.Limiter refuses more than its burst at once: let the
		// bucket hold n for the reservation, which leaves it in debt.
		burst := p.r.Burst()
		if p.n > burst {
			p.r.SetBurstAt(now, p.n)
		}
		r := p.r.ReserveN(now, p.n)
		if p.n > burst {
			p.r.SetBurstAt(now, burst)
		}
		if r.OK() {
			d = max(d, r.DelayFrom(now))
		}
	}
	if d > 0 {
		l.waits.Add(1)
		l.waitedNS.Add(uint64(d))
	}
	return d
}

// Throttled returns how many operations had to wait for tokens and how
// long they waited in all.
func (l *Limiter) Throttled() (ops uint64, waited time.Duration) {
	return l.waits.Load(), time.Duration(l.waitedNS.Load())
}

// Sleep waits d, or until ctx ends or wake says the limits changed.
func Sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-wake:
	}
}
