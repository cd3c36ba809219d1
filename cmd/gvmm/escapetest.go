//go:build escapetest

package main

import (
	"log/slog"
	"os"
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
		try("execve /proc/self/exe", execSelf())
		// TIOCSTI reads one byte at the address it is given: the low byte
		// of the int, little-endian.
		try("ioctl TIOCSTI on stdin", unix.IoctlSetPointerInt(int(os.Stdin.Fd()), unix.TIOCSTI, 'x'))
		try("setuid 0", syscall.Setuid(0))
		log.Info("escapetest", "what", "done")
	}
}

// execSelf runs this program again, as a guest in the VMM would run a
// shell; ForkExec reports execve's own error (os/exec would first fail
// to open /dev/null, which the confined root has none of).
func execSelf() error {
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"gvmm", "version"}, &syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
	if err != nil {
		return err
	}
	var ws syscall.WaitStatus
	_, err = syscall.Wait4(pid, &ws, 0, nil)
	return err
}

func errText(err error) string {
	if err == nil {
		return "none: it worked"
	}
	return err.Error()
}
