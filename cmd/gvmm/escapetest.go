//go:build escapetest

package main

import (
	"log/slog"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// A test build (tests/confine) tries, inside the freshly confined VMM,
// what a guest that took over the VMM would try, and logs each result:
//
//	level=INFO msg=escapetest what="open /etc/passwd" err="..."
//
// before the seccomp filter, so that what stops each attempt is the
// confinement itself.
func init() {
	afterConfine = func(log *slog.Logger) {
		try := func(what string, err error) {
			log.Info("escapetest", "what", what, "err", errText(err))
		}
		f, err := os.Open("/etc/passwd")
		if err == nil {
			f.Close()
		}
		try("open /etc/passwd", err)
		try("write /root/x", os.WriteFile("/root/x", []byte("escaped\n"), 0o644))
		try("execve /proc/self/exe", exec.Command("/proc/self/exe", "version").Run())
		// TIOCSTI reads one byte at the address it is given: the low byte
		// of the int, little-endian.
		try("ioctl TIOCSTI on stdin", unix.IoctlSetPointerInt(int(os.Stdin.Fd()), unix.TIOCSTI, 'x'))
		try("setuid 0", syscall.Setuid(0))
		log.Info("escapetest", "what", "done")
	}
}

func errText(err error) string {
	if err == nil {
		return "none: it worked"
	}
	return err.Error()
}
