package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestTake(t *testing.T) {
	tests := []struct {
		name       string
		bytes, ops Bucket
		sizes      []int
		// minLast and maxLast bound the wait the last Take returns.
		minLast, maxLast time.Duration
		throttled        uint64
	}{
		{"no limit", Bucket{}, Bucket{}, []int{1 << 30, 1 << 30}, 0, 0, 0},
		{"within the burst", Bucket{Rate: 1000}, Bucket{}, []int{400, 600}, 0, 0, 0},
		{"bytes in debt", Bucket{Rate: 1000}, Bucket{}, []int{1000, 500}, 400 * time.Millisecond, 500 * time.Millisecond, 1},
		{"larger than the burst goes into debt", Bucket{Rate: 1000, Burst: 100}, Bucket{}, []int{1100, 100}, 1050 * time.Millisecond, 1100 * time.Millisecond, 2},
		{"ops", Bucket{}, Bucket{Rate: 10, Burst: 2}, []int{0, 0, 0}, 50 * time.Millisecond, 100 * time.Millisecond, 1},
		{"the longer of both waits", Bucket{Rate: 1000}, Bucket{Rate: 1, Burst: 1}, []int{10, 10}, 900 * time.Millisecond, time.Second, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New()
			l.Set(tt.bytes, tt.ops)
			var last time.Duration
			for _, n := range tt.sizes {
				last = l.Take(n)
			}
			assert.GreaterOrEqual(t, last, tt.minLast)
			assert.LessOrEqual(t, last, tt.maxLast)
			n, waited := l.Throttled()
			assert.Equal(t, tt.throttled, n)
			if tt.throttled > 0 {
				assert.GreaterOrEqual(t, waited, tt.minLast)
			}
		})
	}
}

func TestSetLifts(t *testing.T) {
	l := New()
	l.Set(Bucket{}, Bucket{Rate: 1, Burst: 1})
	l.Take(0)
	assert.Positive(t, l.Take(0), "in debt")
	l.Set(Bucket{}, Bucket{})
	assert.Zero(t, l.Take(0), "lifted")
}

func TestSleep(t *testing.T) {
	wake := make(chan struct{}, 1)
	start := time.Now()
	Sleep(context.Background(), 20*time.Millisecond, wake)
	assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond, "the timer")

	wake <- struct{}{}
	start = time.Now()
	Sleep(context.Background(), time.Hour, wake)
	assert.Less(t, time.Since(start), time.Second, "woken by a limit change")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start = time.Now()
	Sleep(ctx, time.Hour, wake)
	assert.Less(t, time.Since(start), time.Second, "ended with ctx")
}
