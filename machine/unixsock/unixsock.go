// Package unixsock makes the listening unix sockets of gvmm's control API
// and serial console: private to their owner, replacing only a socket
// left behind by a dead server.
package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrInUse is returned when a server already answers on the path.
var ErrInUse = errors.New("another server is listening on the socket")

// MaxPath is the longest path a unix socket can have.
const MaxPath = len(unix.RawSockaddrUnix{}.Path) - 1

// probeTimeout bounds asking an existing socket whether it is alive.
const probeTimeout = time.Second

// RemoveStale makes way for a new socket at path: nothing there is fine,
// a socket that refuses connections is removed (removed reports it),
// anything else is kept and reported.
func RemoveStale(path string) (removed bool, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return false, fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return false, fmt.Errorf("%s: %w", path, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return false, fmt.Errorf("%s exists and cannot be probed: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("removing stale socket: %w", err)
	}
	return true, nil
}

// Listen binds a listening unix socket at path that is never reachable
// by others: the socket's mode is set to 0600 before bind, which Linux
// uses (less the umask) for the file it creates, so there is no window
// with the umask's looser mode; a chmod after bind undoes a stricter
// umask. Bind fails if path exists. sock identifies the file made, for
// Remove.
func Listen(path string) (ln net.Listener, sock fs.FileInfo, err error) {
	switch {
	case path == "":
		return nil, nil, errors.New("empty socket path")
	case len(path) > MaxPath:
		return nil, nil, fmt.Errorf("socket path %q is %d bytes, longer than the %d a unix socket allows", path, len(path), MaxPath)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), path) // owns fd from here on
	defer f.Close()                    // net.FileListener keeps a dup
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return nil, nil, fmt.Errorf("fchmod socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, nil, fmt.Errorf("bind %s: %w", path, err)
	}
	ln, sock, err = func() (net.Listener, fs.FileInfo, error) {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, nil, err
		}
		sock, err := os.Lstat(path)
		if err != nil {
			return nil, nil, err
		}
		if err := unix.Listen(fd, 64); err != nil {
			return nil, nil, fmt.Errorf("listen %s: %w", path, err)
		}
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, nil, err
		}
		return ln, sock, nil
	}()
	if err != nil {
		os.Remove(path)
		return nil, nil, err
	}
	return ln, sock, nil
}

// Remove removes the socket file at path if it is still sock: a server
// started after ours gave up may have replaced it.
func Remove(path string, sock fs.FileInfo) error {
	if fi, err := os.Lstat(path); err == nil && os.SameFile(fi, sock) {
		return os.Remove(path)
	}
	return nil
}
