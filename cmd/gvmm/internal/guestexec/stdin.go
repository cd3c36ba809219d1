package guestexec

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// StdinEOFFile, in the control folder, holds the number of bytes of the
// host's stdin once it reached its end: the console cannot carry an end
// of file, so the guest learns it here and ends COMMAND's stdin after
// that many bytes.
const StdinEOFFile = "stdin-eof"

// ReadyFile, in the control folder, says the guest's console is in raw
// mode: input that came before would be echoed and translated by the
// terminal.
const ReadyFile = "console-ready"

// stdinPoll is how often the guest looks for StdinEOFFile, and the host
// for ReadyFile.
const stdinPoll = 20 * time.Millisecond

// Input is the console input of gvmm exec's guest: R, held back until
// the guest's console is raw (ReadyFile in the control folder Dir), and
// counted so that, at R's end, the count goes into StdinEOFFile.
type Input struct {
	R     io.Reader
	Dir   string
	ready bool
	n     int64
}

func (e *Input) Read(p []byte) (int, error) {
	for !e.ready {
		if _, err := os.Stat(filepath.Join(e.Dir, ReadyFile)); err == nil {
			e.ready = true
		} else {
			time.Sleep(stdinPoll)
		}
	}
	n, err := e.R.Read(p)
	e.n += int64(n)
	if errors.Is(err, io.EOF) {
		// "N\n": the guest takes the file only with its newline.
		if werr := os.WriteFile(filepath.Join(e.Dir, StdinEOFFile), []byte(strconv.FormatInt(e.n, 10)+"\n"), 0o600); werr != nil {
			return n, fmt.Errorf("noting the end of stdin: %w", werr)
		}
	}
	return n, err
}

// pipeStdin gives COMMAND a pipe for stdin fed from the console, closed
// once as many bytes passed as the host's stdin had, which the host
// notes in the control folder (descriptor ctl).
func pipeStdin(console *os.File, ctl *os.File) (*os.File, error) {
	// The watcher owns its own descriptor of the control folder.
	dup, err := unix.FcntlInt(ctl.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	watched := os.NewFile(uintptr(dup), ctl.Name())
	pr, pw, err := os.Pipe()
	if err != nil {
		watched.Close()
		return nil, err
	}
	var (
		mu        sync.Mutex
		forwarded int64
		limit     int64 = -1
		closed    bool
	)
	// end closes the pipe once limit is known and reached.
	end := func(force bool) {
		if !closed && (force || limit >= 0 && forwarded >= limit) {
			closed = true
			pw.Close()
		}
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := console.Read(buf)
			mu.Lock()
			if n > 0 && !closed {
				_, werr := pw.Write(buf[:n])
				forwarded += int64(n)
				if werr != nil {
					end(true)
				}
			}
			end(err != nil)
			done := closed
			mu.Unlock()
			if done {
				return
			}
		}
	}()
	go func() {
		defer watched.Close()
		for {
			if n, ok := readEOFCount(watched); ok {
				mu.Lock()
				limit = n
				end(false)
				mu.Unlock()
				return
			}
			time.Sleep(stdinPoll)
		}
	}()
	return pr, nil
}

// markReady creates ReadyFile through the control folder's descriptor.
func markReady(ctl *os.File) error {
	fd, err := unix.Openat(int(ctl.Fd()), ReadyFile, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", ReadyFile, err)
	}
	return unix.Close(fd)
}

// readEOFCount reads StdinEOFFile, if complete.
func readEOFCount(ctl *os.File) (int64, bool) {
	fd, err := unix.Openat(int(ctl.Fd()), StdinEOFFile, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	f := os.NewFile(uintptr(fd), StdinEOFFile)
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0, false
	}
	s, ok := strings.CutSuffix(string(data), "\n")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0
}
