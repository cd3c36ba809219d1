// Package term handles the host terminal the CLI's console runs on: raw
// mode, so keys go to the guest unprocessed, and the Ctrl-A escape that
// lets the user leave a guest that owns every other key.
package term

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Raw mode, as cfmakeraw(3) sets it: no input translation or flow control,
// no output processing (the guest's tty already turns \n into \r\n), no
// echo, line editing or signal keys (Ctrl-C belongs to the guest), 8-bit
// characters, and reads return as soon as one byte is there.
const (
	rawIflagOff = unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	rawOflagOff = unix.OPOST
	rawLflagOff = unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	rawCflagOff = unix.CSIZE | unix.PARENB
	rawCflagOn  = unix.CS8
)

// control runs fn on f's descriptor without switching f to blocking mode,
// as f.Fd would.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var fnErr error
	if err := rc.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return err
	}
	return fnErr
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	return control(f, func(fd int) error {
		_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		return err
	}) == nil
}

// MakeRaw puts the terminal f into raw mode and returns a function that
// restores the previous mode. The caller must call restore on every exit
// path, or the user's shell is left raw; restore may be called more than
// once. For an f that is not a terminal the error wraps unix.ENOTTY.
func MakeRaw(f *os.File) (restore func() error, err error) {
	var saved unix.Termios
	err = control(f, func(fd int) error {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			return err
		}
		saved = *t
		t.Iflag &^= rawIflagOff
		t.Oflag &^= rawOflagOff
		t.Lflag &^= rawLflagOff
		t.Cflag &^= rawCflagOff
		t.Cflag |= rawCflagOn
		t.Cc[unix.VMIN] = 1
		t.Cc[unix.VTIME] = 0
		return unix.IoctlSetTermios(fd, unix.TCSETS, t)
	})
	if err != nil {
		return nil, fmt.Errorf("term: making %s raw: %w", f.Name(), err)
	}
	return func() error {
		err := control(f, func(fd int) error { return unix.IoctlSetTermios(fd, unix.TCSETS, &saved) })
		if err != nil {
			return fmt.Errorf("term: restoring %s: %w", f.Name(), err)
		}
		return nil
	}, nil
}
