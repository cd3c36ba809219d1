package console

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// LogLimit is the size at which a console log is rotated: a guest that
// writes to its console without end keeps at most twice this on disk.
const LogLimit = 16 << 20

// logRetry is how long a console log that failed drops output before it
// tries to write again.
const logRetry = time.Second

// LogFile is a console's record on disk: the newest output in PATH, the
// output before it in PATH.1, each at most its limit. Writes never fail:
// the console's other readers (stdout, the socket) must not lose output
// because the disk did. When the disk fails (ENOSPC, EFBIG, EIO), output
// is dropped, logged once, and writing is tried again after logRetry:
// never by rotating, which would throw PATH.1 away for nothing.
type LogFile struct {
	path   string
	limit  int64
	log    *slog.Logger
	create func(path string) (io.WriteCloser, error)
	now    func() time.Time

	mu       sync.Mutex
	f        io.WriteCloser // nil when reopening it failed
	size     int64
	failedAt time.Time // zero while recording: the last failure's time
	dropped  int64     // since the failure
}

// OpenLog creates (or empties) the console log at path, rotated at limit
// bytes.
func OpenLog(path string, limit int64, log *slog.Logger) (*LogFile, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("console log %s: limit %d is not positive", path, limit)
	}
	l := &LogFile{path: path, limit: limit, log: log, create: createLog, now: time.Now}
	f, err := l.create(path)
	if err != nil {
		return nil, fmt.Errorf("console log: %w", err)
	}
	l.f = f
	return l, nil
}

func createLog(path string) (io.WriteCloser, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
}

// AppendLog opens the log at path to add to what it holds, as a log kept
// across runs, rotated at limit bytes like a console log: a file already
// past its limit is rotated at the first write. onOpen, if not nil, is
// given each file the log opens, before it is written to (gvmm run points
// its stderr there, so that a crash's trace lands in the current file).
func AppendLog(path string, limit int64, log *slog.Logger, onOpen func(*os.File) error) (*LogFile, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("log %s: limit %d is not positive", path, limit)
	}
	create := func(path string) (io.WriteCloser, error) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		if onOpen != nil {
			if err := onOpen(f); err != nil {
				f.Close()
				return nil, err
			}
		}
		return f, nil
	}
	l := &LogFile{path: path, limit: limit, log: log, create: create, now: time.Now}
	w, err := create(path)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	f := w.(*os.File)
	if l.size, err = f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("log: %w", err)
	}
	l.f = f
	return l, nil
}

// Write appends p, rotating first when p would take the file past its
// limit; it always reports len(p) written.
func (l *LogFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	failing := !l.failedAt.IsZero()
	if failing && l.now().Sub(l.failedAt) < logRetry {
		l.dropped += int64(len(p))
		return len(p), nil
	}
	rest := p
	for len(rest) > 0 {
		if (l.f == nil || l.size >= l.limit) && !l.rotate() {
			break
		}
		chunk := rest[:min(int64(len(rest)), l.limit-l.size)]
		n, err := l.f.Write(chunk)
		l.size += int64(n)
		rest = rest[n:]
		if err != nil {
			l.fail("writing the console log", err)
			break
		}
	}
	if len(rest) > 0 {
		l.dropped += int64(len(rest))
	} else if failing {
		l.log.Info("recording the console log again", "path", l.path, "dropped_bytes", l.dropped)
		l.failedAt, l.dropped = time.Time{}, 0
	}
	return len(p), nil
}

// rotate moves the log to PATH.1, replacing the one there, and starts
// PATH again; with no file open, it only starts PATH.
func (l *LogFile) rotate() bool {
	if l.f != nil {
		if err := os.Rename(l.path, l.path+".1"); err != nil {
			l.fail("rotating the console log", err)
			return false
		}
		if err := l.f.Close(); err != nil { // at most once per limit's worth
			l.log.Warn("closing the rotated console log", "path", l.path+".1", "err", err)
		}
		l.f = nil
	}
	f, err := l.create(l.path)
	if err != nil {
		l.fail("reopening the console log", err)
		return false
	}
	l.f, l.size = f, 0
	return true
}

func (l *LogFile) fail(what string, err error) {
	if l.failedAt.IsZero() {
		l.log.Warn(what+": console output is not recorded until it works again", "path", l.path, "err", err, "retry_every", logRetry)
	}
	l.failedAt = l.now()
}

// Close closes the file.
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
