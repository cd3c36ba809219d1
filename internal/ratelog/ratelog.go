// Package ratelog bounds the log lines a guest can provoke. A device that
// logs every malformed request or register write it refuses would let a
// hostile guest write the host's log without limit; a Logger lets a burst
// of lines through per window and per level, counts the rest and reports
// that count with the next line that gets through.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Budget of each level of a Logger: at most Burst lines per Window.
const (
	Burst  = 10
	Window = time.Minute
)

// Logger is a rate-limited view of a slog.Logger, safe for concurrent use.
type Logger struct {
	log *slog.Logger
	now func() time.Time

	mu     sync.Mutex
	levels map[slog.Level]*window
}

type window struct {
	start      time.Time
	n          int
	suppressed int
}

// New returns a Logger writing to log.
func New(log *slog.Logger) *Logger { return newWithClock(log, time.Now) }

func newWithClock(log *slog.Logger, now func() time.Time) *Logger {
	return &Logger{log: log, now: now, levels: map[slog.Level]*window{}}
}

// Log logs msg at level unless the level's budget is spent; the first
// line after suppressed ones carries "suppressed=N".
func (l *Logger) Log(level slog.Level, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return // a disabled level spends nothing
	}
	ok, suppressed := l.allow(level)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// Warn logs at slog.LevelWarn.
func (l *Logger) Warn(msg string, args ...any) { l.Log(slog.LevelWarn, msg, args...) }

// Debug logs at slog.LevelDebug.
func (l *Logger) Debug(msg string, args ...any) { l.Log(slog.LevelDebug, msg, args...) }

// allow reports whether a line may be logged now and, if so, how many
// were dropped since the last one that was.
func (l *Logger) allow(level slog.Level) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.levels[level]
	if w == nil {
		w = &window{}
		l.levels[level] = w
	}
	t := l.now()
	if t.Sub(w.start) >= Window || t.Before(w.start) {
		w.start, w.n = t, 0
	}
	if w.n >= Burst {
		w.suppressed++
		return false, 0
	}
	w.n++
	s := w.suppressed
	w.suppressed = 0
	return true, s
}
