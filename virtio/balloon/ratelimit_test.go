package balloon

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := limiter{now: func() time.Time { return now }}
	type step struct {
		advance    time.Duration
		calls      int
		allowed    int
		suppressed int // reported by the first allowed call
	}
	steps := []struct {
		name string
		step
	}{
		{"burst allowed", step{0, logBurst, logBurst, 0}},
		{"then dropped", step{time.Second, 5, 0, 0}},
		{"next window reports the drops", step{logWindow, 3, 3, 5}},
		{"clock going back starts a window", step{-time.Hour, 1, 1, 0}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			now = now.Add(s.advance)
			allowed, first := 0, -1
			for range s.calls {
				ok, n := l.allow()
				if ok {
					allowed++
					if first < 0 {
						first = n
					}
				}
			}
			assert.Equal(t, s.allowed, allowed)
			if s.allowed > 0 {
				assert.Equal(t, s.suppressed, first)
			}
		})
	}
}
