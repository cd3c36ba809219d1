package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// lines returns the messages a text handler wrote, one per line.
func lines(b *bytes.Buffer) []string {
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
}

func TestBurstThenSuppressed(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	l := newWithClock(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now })
	for i := 0; i < 1000; i++ {
		l.Warn("bad request", "i", i)
	}
	got := lines(&buf)
	assert.Len(t, got, Burst, "a window lets a burst through")
	assert.Contains(t, got[Burst-1], "i=9")

	now = now.Add(Window)
	buf.Reset()
	l.Warn("bad request", "i", 1000)
	assert.Equal(t, 1, len(lines(&buf)))
	assert.Contains(t, buf.String(), "suppressed=990", "the next window reports what the last dropped")

	buf.Reset()
	l.Warn("bad request", "i", 1001)
	assert.NotContains(t, buf.String(), "suppressed", "reported once")
}

func TestLevelsHaveTheirOwnBudget(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	l := newWithClock(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		func() time.Time { return now })
	for i := 0; i < 100; i++ {
		l.Debug("noise")
	}
	l.Warn("problem")
	assert.Equal(t, 1, strings.Count(buf.String(), "problem"), "debug lines do not spend the warnings' budget")
	assert.Equal(t, Burst, strings.Count(buf.String(), "noise"))
}

func TestDisabledLevelSpendsNothing(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	l := newWithClock(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now }) // info and up
	for i := 0; i < 100; i++ {
		l.Debug("noise")
	}
	assert.Empty(t, buf.String())
	assert.Empty(t, l.levels, "no budget kept for a level that is off")
}

func TestClockGoingBackStartsAWindow(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	l := newWithClock(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now })
	for i := 0; i < Burst+1; i++ {
		l.Warn("x")
	}
	now = now.Add(-time.Hour)
	l.Warn("after")
	assert.Contains(t, buf.String(), "after")
}

func TestConcurrentUse(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil)))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 1000; i++ {
				l.Warn("bad")
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, Burst, strings.Count(buf.String(), "bad"))
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
