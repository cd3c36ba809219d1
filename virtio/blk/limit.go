package blk

import (
	"context"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
)

// Limit bounds a disk's rates, as Firecracker's drive rate_limiter does:
// a request needs one token of Ops and a token of Bytes for each byte it
// reads or writes, the zeroes of a write-zeroes included (the host may
// write them); a discard, flush or GET_ID moves no bytes.
type Limit struct {
	Bytes ratelimit.Bucket `json:"bytes,omitzero"`
	Ops   ratelimit.Bucket `json:"ops,omitzero"`
}

// Limit returns the rate limit in force.
func (d *Disk) Limit() Limit {
	d.limitMu.Lock()
	defer d.limitMu.Unlock()
	return d.limit
}

// SetLimit changes the rate limit at once; a request waiting for tokens
// goes ahead.
func (d *Disk) SetLimit(l Limit) {
	d.limitMu.Lock()
	d.limit = l
	d.limiter.Set(l.Bytes, l.Ops)
	d.limitMu.Unlock()
	select {
	case d.limitWake <- struct{}{}:
	default: // a wake is already pending
	}
}

// throttle waits until the rate limit lets req go, or ctx ends.
func (d *Disk) throttle(ctx context.Context, req Request) {
	var n uint64
	switch req.Type {
	case TypeIn, TypeOut:
		n = segments(req.Data).len()
	case TypeWriteZeroes:
		for _, r := range req.Ranges {
			n += uint64(r.Sectors) * SectorSize
		}
	}
	// ParseRequest bounded n: 254 MiB of data or 1 GiB of zeroes.
	ratelimit.Sleep(ctx, d.limiter.Take(int(n)), d.limitWake)
}
