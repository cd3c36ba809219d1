// Package console puts the host terminal into raw mode for the guest's
// serial console and gives the user a way out: QEMU's "-serial mon:stdio"
// escape, Ctrl-A x.
package console

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	return control(f, func(fd int) error {
		_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		return err
	}) == nil
}

// MakeRaw puts the terminal f into raw mode, as cfmakeraw(3) does: no
// echo, no line editing, no signals from Ctrl-C or Ctrl-Z (they go to the
// guest), 8-bit bytes delivered one at a time. restore puts back the
// settings f had before; call it before the program exits, also on error
// paths, or the user's shell is left raw.
func MakeRaw(f *os.File) (restore func() error, err error) {
	var saved *unix.Termios
	err = control(f, func(fd int) error {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			return fmt.Errorf("console: TCGETS: %w", err)
		}
		saved = t
		raw := *t
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Oflag &^= unix.OPOST
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN] = 1
		raw.Cc[unix.VTIME] = 0
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
			return fmt.Errorf("console: TCSETS: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return func() error {
		return control(f, func(fd int) error {
			if err := unix.IoctlSetTermios(fd, unix.TCSETS, saved); err != nil {
				return fmt.Errorf("console: restoring terminal: %w", err)
			}
			return nil
		})
	}, nil
}

// control runs fn on f's descriptor without f.Fd(), which would switch f
// to blocking mode and stop the runtime poller from interrupting reads.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	var fnErr error
	if err := rc.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return fnErr
}
