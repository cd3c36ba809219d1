package net

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Bucket is a token bucket: Rate tokens (bytes or packets) a second, up
// to Burst saved while idle. A zero Rate means no limit; a zero Burst
// is one second's worth of Rate.
type Bucket struct {
	Rate  uint64 `json:"rate"`
	Burst uint64 `json:"burst,omitempty"`
}

// Limit bounds one direction of a device, in bytes and in packets, as
// Firecracker's rate_limiter does: a frame needs tokens of both.
type Limit struct {
	Bytes   Bucket `json:"bytes,omitzero"`
	Packets Bucket `json:"packets,omitzero"`
}

// Limits are a device's rate limits. RX is host to guest, TX guest to
// host.
type Limits struct {
	RX Limit `json:"rx,omitzero"`
	TX Limit `json:"tx,omitzero"`
}

// ErrBurstTooSmall refuses a byte bucket that could never hold a frame.
var ErrBurstTooSmall = errors.New("byte burst below the largest frame")

// Validate checks that every byte bucket can pass a largest frame in one
// go: otherwise a frame would wait for tokens that never accumulate.
func (l Limits) Validate() error {
	for _, b := range []Bucket{l.RX.Bytes, l.TX.Bytes} {
		if b.Rate != 0 && b.burst() < MaxFrame {
			return ErrBurstTooSmall
		}
	}
	return nil
}

func (b Bucket) burst() uint64 {
	if b.Burst != 0 {
		return b.Burst
	}
	return b.Rate
}

// limiter is one direction's pair of buckets; golang.org/x/time/rate is
// safe for concurrent use, so the API can change it while a queue runs.
type limiter struct {
	bytes, packets *rate.Limiter
	// waits and waited count the frames held for tokens and how long,
	// for the metrics.
	waits, waitedNS *atomic.Uint64
}

func newLimiter() limiter {
	return limiter{bytes: rate.NewLimiter(rate.Inf, 0), packets: rate.NewLimiter(rate.Inf, 0),
		waits: new(atomic.Uint64), waitedNS: new(atomic.Uint64)}
}

func (l limiter) set(lim Limit) {
	for _, p := range []struct {
		r *rate.Limiter
		b Bucket
	}{{l.bytes, lim.Bytes}, {l.packets, lim.Packets}} {
		if p.b.Rate == 0 {
			p.r.SetLimit(rate.Inf)
			continue
		}
		p.r.SetBurst(int(min(p.b.burst(), math.MaxInt32)))
		p.r.SetLimit(rate.Limit(p.b.Rate))
	}
}

// take spends the tokens of one frame of n bytes and returns how long the
// caller must wait before the frame may go: the buckets may be in debt,
// never spun on. Without limits it does not read the clock, which costs
// a system call where the clock source has no vDSO.
func (l limiter) take(n int) time.Duration {
	if l.bytes.Limit() == rate.Inf && l.packets.Limit() == rate.Inf {
		return 0
	}
	now := time.Now()
	var d time.Duration
	for _, p := range []struct {
		r *rate.Limiter
		n int
	}{{l.bytes, n}, {l.packets, 1}} {
		if p.r.Limit() == rate.Inf {
			continue
		}
		r := p.r.ReserveN(now, min(p.n, p.r.Burst()))
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

// sleep waits d, or until ctx ends or wake says the limits changed.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) {
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
