package balloon

import (
	"sync"
	"time"
)

// Logging budget for what the guest can provoke: at most logBurst
// messages per logWindow, the rest counted and reported with the next
// message that gets through.
const (
	logBurst  = 10
	logWindow = time.Minute
)

// limiter is a fixed-window rate limit shared by the queue workers.
type limiter struct {
	mu         sync.Mutex
	now        func() time.Time
	start      time.Time
	n          int
	suppressed int
}

// allow reports whether a message may be logged now and, if so, how many
// were dropped since the last one that was.
func (l *limiter) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.now()
	if t.Sub(l.start) >= logWindow || t.Before(l.start) {
		l.start, l.n = t, 0
	}
	if l.n >= logBurst {
		l.suppressed++
		return false, 0
	}
	l.n++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}
