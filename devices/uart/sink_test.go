package uart

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// warnings counts the records logged at Warn and above.
type warnings struct{ n atomic.Int32 }

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(context.Context, slog.Record) error    { w.n.Add(1); return nil }
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler           { return w }
func (w *warnings) WithGroup(string) slog.Handler                { return w }

// lockedBuffer is a bytes.Buffer the sink's goroutine and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stalled is a writer that takes nothing until released.
type stalled struct{ release chan struct{} }

func (s stalled) Write(p []byte) (int, error) { <-s.release; return len(p), nil }

type failing struct{ calls atomic.Int32 }

func (f *failing) Write([]byte) (int, error) { f.calls.Add(1); return 0, errors.New("disk full") }

func TestSinkPassesOutputInOrder(t *testing.T) {
	var out lockedBuffer
	var warn warnings
	s := NewSink(&out, 64, slog.New(&warn))
	var want bytes.Buffer
	for i := range 1000 {
		b := []byte{byte('a' + i%26)}
		want.Write(b)
		n, err := s.Write(b)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // let the writer catch up: 64 bytes hold little
		}
	}
	dropped := s.Close(5 * time.Second)
	assert.Equal(t, want.Len()-int(dropped), len(out.String()))
	if dropped == 0 {
		assert.Equal(t, want.String(), out.String(), "every byte, in order")
		assert.Zero(t, warn.n.Load())
	}
}

// The regression a stalled console caused: the vCPU writing the UART's
// THR blocked in the console's Write. Through a sink, the guest's writes
// return at once; what the buffer cannot hold is dropped and said once.
func TestStalledConsoleNeverStallsTheGuest(t *testing.T) {
	w := stalled{release: make(chan struct{})}
	var warn warnings
	s := NewSink(w, 1024, slog.New(&warn))
	u := New(&countIRQ{}, s, slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10 * 1024 {
			wr(u, regData, 'x')
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the guest's writes to the UART blocked on a stalled console")
	}
	assert.Equal(t, int32(1), warn.n.Load(), "the drop is logged once")
	start := time.Now()
	dropped := s.Close(100 * time.Millisecond)
	assert.Less(t, time.Since(start), 2*time.Second, "Close gives up on a stalled writer")
	// The writer holds at most one buffer's worth; the rest is dropped.
	assert.GreaterOrEqual(t, dropped, uint64(10*1024-2*1024))
	close(w.release)
}

func TestSinkStopsOnAFailingWriter(t *testing.T) {
	var f failing
	var warn warnings
	s := NewSink(&f, 1024, slog.New(&warn))
	_, _ = s.Write([]byte("hello"))
	require.Eventually(t, func() bool { return f.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	for range 100 {
		n, err := s.Write([]byte("more"))
		require.NoError(t, err, "the guest never sees the console's failure")
		require.Equal(t, 4, n)
	}
	assert.Equal(t, uint64(5+400), s.Close(time.Second))
	assert.Equal(t, int32(1), f.calls.Load(), "a failed writer is not tried again")
	assert.Equal(t, int32(1), warn.n.Load(), "the failure is logged once")
}

var _ io.Writer = (*Sink)(nil)
