package metrics

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestHistogram(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{
		-time.Second,           // counts as zero: the first bucket
		10 * time.Microsecond,  // on a bound: that bucket
		11 * time.Microsecond,  // 25 µs
		3 * time.Millisecond,   // 5 ms
		time.Second,            // the last bound
		10 * time.Second,       // +Inf only
		250 * time.Microsecond, // 250 µs
	} {
		h.Observe(d)
	}
	s := h.Snapshot()
	assert.Equal(t, uint64(7), s.Count)
	assert.InDelta(t, (10*time.Microsecond + 11*time.Microsecond + 3*time.Millisecond + 11*time.Second + 250*time.Microsecond).Seconds(), s.SumSeconds, 1e-9)
	assert.Len(t, s.Buckets, len(LatencyBounds))
	tests := []struct {
		le   float64
		want uint64
	}{
		{10e-6, 2}, {25e-6, 3}, {100e-6, 3}, {250e-6, 4}, {2.5e-3, 4}, {5e-3, 5}, {0.5, 5}, {1, 6},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, s.Buckets[tt.le], "le=%v", tt.le)
	}
}

func TestHistogramEmpty(t *testing.T) {
	var h Histogram
	s := h.Snapshot()
	assert.Zero(t, s.Count)
	assert.Zero(t, s.SumSeconds)
	for le, n := range s.Buckets {
		assert.Zero(t, n, "le=%v", le)
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	var h Histogram
	for i := 0; b.Loop(); i++ {
		h.Observe(time.Duration(i&0xffff) * time.Microsecond)
	}
}
