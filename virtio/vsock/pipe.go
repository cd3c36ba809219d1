package vsock

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Pipe returns the two ends of a connected unix stream socket pair: the
// in-process host side of a connection. Unlike net.Pipe, each end is a
// *net.UnixConn that can half-close (CloseWrite), so a guest reading to
// EOF works, and the kernel's socket buffer, not a rendezvous, sits
// between the device and the user.
func Pipe() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("vsock: socketpair: %w", err)
	}
	a, err := fileConn(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	b, err := fileConn(fds[1])
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// fileConn makes a *net.UnixConn of fd, which it takes over.
func fileConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "vsock-pipe")
	defer f.Close() // net.FileConn keeps a dup
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("vsock: %w", err)
	}
	return c.(*net.UnixConn), nil
}
