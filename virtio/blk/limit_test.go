package blk

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/internal/metrics/metricstest"
	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

// queueAll makes n copies of the request bufs available at once and
// returns how long the device took to complete them all.
func (r *rig) queueAll(t *testing.T, n int, bufs []virtiotest.Buf) time.Duration {
	t.Helper()
	q := r.drv.Queues[0]
	start := time.Now()
	for range n {
		q.AddChain(bufs)
	}
	r.drv.Kick(0)
	require.Eventually(t, func() bool { return q.UsedIdx() == uint16(n) }, waitFor, time.Millisecond)
	return time.Since(start)
}

func TestRateLimit(t *testing.T) {
	status := virtiotest.Buf{Len: 1, Write: true}
	tests := []struct {
		name  string
		limit Limit
		bufs  []virtiotest.Buf // of each of five requests
		// slow is at least how long the five take, throttled how many
		// of them waited.
		slow      time.Duration
		throttled float64
	}{
		// One token at once, then one per 50 ms.
		{"ops", Limit{Ops: ratelimit.Bucket{Rate: 20, Burst: 1}},
			[]virtiotest.Buf{{Data: header(TypeFlush, 0)}, status}, 190 * time.Millisecond, 4},
		// 4 KiB at once, then 4 KiB per 50 ms.
		{"read bytes", Limit{Bytes: ratelimit.Bucket{Rate: 80 << 10, Burst: 4 << 10}},
			[]virtiotest.Buf{{Data: header(TypeIn, 0)}, {Len: 4096, Write: true}, status}, 190 * time.Millisecond, 4},
		{"write bytes", Limit{Bytes: ratelimit.Bucket{Rate: 80 << 10, Burst: 4 << 10}},
			[]virtiotest.Buf{{Data: header(TypeOut, 0)}, {Data: make([]byte, 4096)}, status}, 190 * time.Millisecond, 4},
		// 16 KiB against a burst of 4 KiB is charged in full: the first
		// request leaves 150 ms of debt, each later one 200 ms more.
		{"larger than the burst", Limit{Bytes: ratelimit.Bucket{Rate: 80 << 10, Burst: 4 << 10}},
			[]virtiotest.Buf{{Data: header(TypeOut, 0)}, {Data: make([]byte, 16<<10)}, status}, 940 * time.Millisecond, 5},
		// Write zeroes pays for its zeroes: 32 KiB at 320 KiB/s.
		{"write zeroes bytes", Limit{Bytes: ratelimit.Bucket{Rate: 320 << 10, Burst: 32 << 10}},
			[]virtiotest.Buf{{Data: header(TypeWriteZeroes, 0)}, {Data: rangeBytes([3]uint64{0, 64, 0})}, status}, 390 * time.Millisecond, 4},
		// A discard moves no bytes.
		{"discard is free of bytes", Limit{Bytes: ratelimit.Bucket{Rate: 1, Burst: 1}},
			[]virtiotest.Buf{{Data: header(TypeDiscard, 0)}, {Data: rangeBytes([3]uint64{0, 64, 0})}, status}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, Options{Limit: tt.limit}, linuxFeatures)
			assert.Equal(t, tt.limit, r.disk.Limit())
			took := r.queueAll(t, 5, tt.bufs)
			assert.GreaterOrEqual(t, took, tt.slow)
			s := metricstest.Collect(r.disk)
			throttled, ok := s.Get("gvmm_disk_throttled_requests_total")
			require.True(t, ok)
			waited, ok := s.Get("gvmm_disk_throttled_seconds_total")
			require.True(t, ok)
			if tt.throttled == 0 {
				assert.Zero(t, throttled.Value)
				assert.Zero(t, waited.Value)
				return
			}
			// A worker descheduled between requests (a loaded machine)
			// finds tokens refilled meanwhile: fewer requests wait, and
			// for less than the run took. The run's length is what the
			// limit guarantees.
			assert.InDelta(t, tt.throttled, throttled.Value, tt.throttled-1)
			assert.Positive(t, waited.Value)
		})
	}
}

func TestRateLimitUnlimited(t *testing.T) {
	r := newRig(t, Options{}, linuxFeatures)
	took := r.queueAll(t, 50, []virtiotest.Buf{{Data: header(TypeOut, 0)}, {Data: make([]byte, 64<<10)}, {Len: 1, Write: true}})
	assert.Less(t, took, 2*time.Second)
	s := metricstest.Collect(r.disk)
	throttled, ok := s.Get("gvmm_disk_throttled_requests_total")
	require.True(t, ok)
	assert.Zero(t, throttled.Value)
}

// A request waiting for tokens goes as soon as the limit is lifted, and
// does not keep Quiesce waiting meanwhile.
func TestSetLimitWakes(t *testing.T) {
	r := newRig(t, Options{Limit: Limit{Ops: ratelimit.Bucket{Rate: 1, Burst: 1}}}, linuxFeatures)
	require.Equal(t, byte(StatusOK), r.submit(t, TypeFlush, 0, nil).status)
	q := r.drv.Queues[0]
	q.AddChain([]virtiotest.Buf{{Data: header(TypeFlush, 0)}, {Len: 1, Write: true}})
	r.drv.Kick(0)
	require.Eventually(t, func() bool {
		n, _ := r.disk.limiter.Throttled()
		return n == 1
	}, waitFor, time.Millisecond, "the second flush waits for a token")

	start := time.Now()
	require.NoError(t, r.disk.Quiesce())
	assert.Less(t, time.Since(start), 500*time.Millisecond, "Quiesce waited for a throttled request")
	r.disk.Release()

	r.disk.SetLimit(Limit{})
	require.True(t, r.msi.Wait(0, 500*time.Millisecond), "the flush still waits after the limit was lifted")
	assert.Equal(t, Limit{}, r.disk.Limit())
}

// A reset does not wait for a throttled request.
func TestResetWhileThrottled(t *testing.T) {
	r := newRig(t, Options{Limit: Limit{Ops: ratelimit.Bucket{Rate: 1, Burst: 1}}}, linuxFeatures)
	q := r.drv.Queues[0]
	for range 2 {
		q.AddChain([]virtiotest.Buf{{Data: header(TypeFlush, 0)}, {Len: 1, Write: true}})
	}
	r.drv.Kick(0)
	require.Eventually(t, func() bool {
		n, _ := r.disk.limiter.Throttled()
		return n == 1
	}, waitFor, time.Millisecond)
	start := time.Now()
	r.drv.SetStatus(0)
	assert.Less(t, time.Since(start), 500*time.Millisecond)
}
