package uart

import (
	"io"
	"log/slog"
	"sync"
	"time"
)

// Sink carries a console's output to a writer from a goroutine of its
// own, through a bounded buffer. The UART transmits on the vCPU thread
// that wrote the byte: written straight to a terminal scrolled back, a
// pipe nobody reads or a hung file system, a byte would stall that vCPU,
// and Stop could not interrupt it. Through a Sink, output beyond the
// buffer is dropped instead, counted and logged once.
type Sink struct {
	w    io.Writer
	log  *slog.Logger
	size int

	mu      sync.Mutex
	buf     []byte // pending, at most size bytes
	dropped uint64
	failed  bool // w failed: output is dropped from then on
	closed  bool
	wake    chan struct{} // buffered: output is pending or the sink closed
	done    chan struct{} // closed when the writer goroutine ended
}

// NewSink returns a sink that writes to w, holding at most size bytes
// that w has not taken yet.
func NewSink(w io.Writer, size int, log *slog.Logger) *Sink {
	s := &Sink{w: w, log: log, size: size, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s
}

// Write queues p and never blocks; what does not fit is dropped.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(p), s.size-len(s.buf))
	if s.failed || s.closed {
		n = 0
	}
	if n < len(p) {
		if s.dropped == 0 && !s.failed {
			s.log.Warn("console output dropped: its reader does not keep up with the guest", "buffer_bytes", s.size)
		}
		s.dropped += uint64(len(p) - n)
	}
	if n > 0 {
		s.buf = append(s.buf, p[:n]...)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// run writes what is pending until the sink is closed and drained.
func (s *Sink) run() {
	defer close(s.done)
	var out []byte // the chunk being written; swapped with buf
	for range s.wake {
		s.mu.Lock()
		out, s.buf = s.buf, out[:0]
		closed := s.closed
		s.mu.Unlock()
		if len(out) > 0 {
			if n, err := s.w.Write(out); err != nil {
				s.mu.Lock()
				s.failed = true
				s.dropped += uint64(len(out) - n + len(s.buf))
				s.buf = s.buf[:0]
				s.mu.Unlock()
				s.log.Warn("console output failed; dropping output", "err", err)
				return
			}
		}
		s.mu.Lock()
		pending := len(s.buf) > 0
		s.mu.Unlock()
		if closed && !pending {
			return
		}
	}
}

// Close stops taking output and waits up to timeout for what is pending
// to be written; it returns the bytes dropped over the sink's life.
func (s *Sink) Close(timeout time.Duration) uint64 {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(timeout):
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped + uint64(len(s.buf))
}
