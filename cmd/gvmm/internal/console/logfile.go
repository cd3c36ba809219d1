package console

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// LogLimit is the size at which a console log is rotated: a guest that
// writes to its console without end keeps at most twice this on disk.
const LogLimit = 16 << 20

// LogFile is a console's record on disk: the newest output in PATH, the
// output before it in PATH.1, each at most its limit. Writes never fail:
// the console's other readers (stdout, the socket) must not lose output
// because the disk did, so a failed write is logged once and dropped.
type LogFile struct {
	path  string
	limit int64
	log   *slog.Logger

	mu     sync.Mutex
	f      *os.File
	size   int64
	failed bool // a write or rotation failed: logged once, output dropped until the next rotation works
}

// OpenLog creates (or empties) the console log at path, rotated at limit
// bytes.
func OpenLog(path string, limit int64, log *slog.Logger) (*LogFile, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("console log %s: limit %d is not positive", path, limit)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("console log: %w", err)
	}
	return &LogFile{path: path, limit: limit, log: log, f: f}, nil
}

// Write appends p, rotating first when p would take the file past its
// limit; it always reports len(p) written.
func (l *LogFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for rest := p; len(rest) > 0; {
		if l.size >= l.limit {
			l.rotate()
		}
		if l.f == nil {
			break
		}
		chunk := rest[:min(int64(len(rest)), l.limit-l.size)]
		n, err := l.f.Write(chunk)
		l.size += int64(n)
		if err != nil {
			l.fail("writing the console log", err)
			break
		}
		rest = rest[n:]
	}
	return len(p), nil
}

// rotate moves the log to PATH.1, replacing the one there, and starts
// PATH again.
func (l *LogFile) rotate() {
	if l.f != nil {
		if err := l.f.Close(); err != nil {
			l.fail("closing the console log", err)
		}
		l.f = nil
	}
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		l.fail("rotating the console log", err)
		return
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		l.fail("reopening the console log", err)
		return
	}
	l.f, l.size, l.failed = f, 0, false
}

func (l *LogFile) fail(what string, err error) {
	if !l.failed {
		l.log.Warn(what+": console output is not recorded until the next rotation works", "path", l.path, "err", err)
	}
	l.failed = true
	// Drop the rest of this file's budget so the next write tries a
	// rotation, which may work where the write did not.
	l.size = l.limit
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
