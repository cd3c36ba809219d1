// Package metrics is what devices count on their hot paths and how a
// scrape reads it. Counting is a plain atomic add: no map lookup, lock or
// Prometheus type on a vCPU's exit path or a queue worker's request path.
// At scrape time the machine hands each device that is a Source a Sink,
// into which the device reports its values; the machine's Prometheus
// collector turns them into metrics. A new device joins by implementing
// Source.
package metrics

import (
	"sync/atomic"
	"time"
)

// Label is one label of a reported value.
type Label struct{ Name, Value string }

// L returns a Label.
func L(name, value string) Label { return Label{name, value} }

// Sink receives a device's values during a scrape. Names follow the
// Prometheus conventions (gvmm_disk_requests_total); a metric keeps the
// same help and label names wherever it is reported.
type Sink interface {
	Counter(name, help string, v float64, labels ...Label)
	Gauge(name, help string, v float64, labels ...Label)
	Histogram(name, help string, h HistogramSnapshot, labels ...Label)
}

// Source is a device with metrics. CollectMetrics may run concurrently
// with the device's work and must only read.
type Source interface {
	CollectMetrics(s Sink)
}

// LatencyBounds are the upper bounds of a Histogram's buckets: 10 µs to
// about 1.3 s in powers of 2 and a half, which spans a page-cache hit to
// a slow fdatasync on a loaded host.
var LatencyBounds = [...]time.Duration{
	10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second,
}

// Histogram counts durations into the fixed LatencyBounds buckets. Its
// zero value is ready; it is safe for concurrent use.
type Histogram struct {
	buckets [len(LatencyBounds) + 1]atomic.Uint64 // the last is +Inf
	sumNS   atomic.Uint64
}

// Observe adds one duration; a negative one counts as zero.
func (h *Histogram) Observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(LatencyBounds) && d > LatencyBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumNS.Add(uint64(d))
}

// HistogramSnapshot is a Histogram's state in Prometheus' form.
type HistogramSnapshot struct {
	Count      uint64
	SumSeconds float64
	// Buckets maps each upper bound, in seconds, to the count of
	// observations at or below it (cumulative).
	Buckets map[float64]uint64
}

// Snapshot reads the histogram. Observations that land while it reads
// may be missing from some fields; the next scrape has them.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Buckets: make(map[float64]uint64, len(LatencyBounds))}
	for i, b := range LatencyBounds {
		s.Count += h.buckets[i].Load()
		s.Buckets[b.Seconds()] = s.Count
	}
	s.Count += h.buckets[len(LatencyBounds)].Load()
	s.SumSeconds = time.Duration(h.sumNS.Load()).Seconds()
	return s
}
