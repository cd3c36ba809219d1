// Package console puts the host terminal into raw mode for the guest's
// serial console and gives the user a way out: QEMU's "-serial mon:stdio"
// escape, Ctrl-A x.
package console

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	return control(f, func(fd int) error {
		if !term.IsTerminal(fd) {
			return unix.ENOTTY
		}
		return nil
	}) == nil
}

// MakeRaw puts the terminal f into raw mode, as cfmakeraw(3) does: no
// echo, no line editing, no signals from Ctrl-C or Ctrl-Z (they go to the
// guest), 8-bit bytes delivered one at a time. restore puts back the
// settings f had before; call it before the program exits, also on error
// paths, or the user's shell is left raw.
func MakeRaw(f *os.File) (restore func() error, err error) {
	var saved *term.State
	err = control(f, func(fd int) (err error) {
		if saved, err = term.MakeRaw(fd); err != nil {
			return fmt.Errorf("console: raw mode: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return func() error {
		return control(f, func(fd int) error {
			if err := term.Restore(fd, saved); err != nil {
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
