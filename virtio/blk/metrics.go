package blk

import (
	"sync/atomic"
	"time"

	"github.com/gvmm-dev/gvmm/internal/metrics"
)

// Request kinds counted apart; the index into stats' arrays.
const (
	opRead = iota
	opWrite
	opFlush
	opDiscard
	opWriteZeroes
	opGetID
	opOther // unsupported or unparsable
	numOps
)

var opNames = [numOps]string{"read", "write", "flush", "discard", "write_zeroes", "get_id", "other"}

func opOf(typ uint32) int {
	switch typ {
	case TypeIn:
		return opRead
	case TypeOut:
		return opWrite
	case TypeFlush:
		return opFlush
	case TypeDiscard:
		return opDiscard
	case TypeWriteZeroes:
		return opWriteZeroes
	case TypeGetID:
		return opGetID
	}
	return opOther
}

// stats are the disk's counters, kept for its lifetime (across guest
// reboots). Only the queue worker adds; a scrape reads.
type stats struct {
	requests [numOps]atomic.Uint64
	errors   [numOps]atomic.Uint64 // completed with a status other than OK
	bytes    [numOps]atomic.Uint64 // data moved by reads and writes
	latency  metrics.Histogram     // from popping the request to its status
}

// count records one completed request.
func (s *stats) count(typ uint32, bytes uint64, failed bool, took time.Duration) {
	op := opOf(typ)
	s.requests[op].Add(1)
	if bytes > 0 {
		s.bytes[op].Add(bytes)
	}
	if failed {
		s.errors[op].Add(1)
	}
	s.latency.Observe(took)
}

// CollectMetrics implements metrics.Source.
func (d *Disk) CollectMetrics(s metrics.Sink) {
	for op, name := range opNames {
		l := metrics.L("op", name)
		s.Counter("gvmm_disk_requests_total", "virtio-blk requests completed, by kind (flush counts the guest's flushes).", float64(d.stats.requests[op].Load()), l)
		s.Counter("gvmm_disk_errors_total", "virtio-blk requests that completed with an error or as unsupported.", float64(d.stats.errors[op].Load()), l)
		if op == opRead || op == opWrite {
			s.Counter("gvmm_disk_bytes_total", "Bytes read from and written to the disk image for the guest.", float64(d.stats.bytes[op].Load()), l)
		}
	}
	throttled, waited := d.limiter.Throttled()
	s.Counter("gvmm_disk_throttled_requests_total", "virtio-blk requests held back by the disk's rate limit.", float64(throttled))
	s.Counter("gvmm_disk_throttled_seconds_total", "Time virtio-blk requests were held back by the disk's rate limit.", waited.Seconds())
	s.Histogram("gvmm_disk_request_duration_seconds", "Time to carry out a virtio-blk request, from taking it off the queue until its status is written.", d.stats.latency.Snapshot())
}

var _ metrics.Source = (*Disk)(nil)
