// Command hostinit is PID 1 of the KVM test host: it mounts the pseudo
// file systems, loads the KVM modules, runs the payload on the second
// serial port and reports the payload's exit status on the first one
// before powering off.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/kvmhost/hostproto"
)

func main() {
	console, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		console = os.Stderr
	}
	go alive(console)
	status, err := run(console)
	if err != nil {
		fmt.Fprintf(console, "%s%v\n", hostproto.ErrorMarker, err)
		status = hostproto.StatusSetupFailed
	}
	fmt.Fprintf(console, "%s%d\n", hostproto.ExitMarker, status)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintf(console, "%spower off: %v\n", hostproto.ErrorMarker, err)
	}
	select {} // PID 1 must not exit: that panics the kernel
}

// alive shows the launcher that the host still schedules user space.
// Each line is one write(2), which the tty keeps whole.
func alive(console *os.File) {
	for range time.Tick(hostproto.AliveEvery) {
		fmt.Fprintln(console, hostproto.AliveMarker)
	}
}

func run(console *os.File) (int, error) {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"debugfs", "/sys/kernel/debug", "debugfs"},
		{"tracefs", "/sys/kernel/tracing", "tracefs"},
		{"tmpfs", "/tmp", "tmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2"}, // as a systemd host has it
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return 0, err
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return 0, fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	data, err := os.ReadFile(hostproto.ConfigPath)
	if err != nil {
		return 0, err
	}
	var cfg hostproto.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return 0, fmt.Errorf("%s: %w", hostproto.ConfigPath, err)
	}
	for _, m := range cfg.Modules {
		if err := loadModule(m); err != nil {
			return 0, err
		}
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return 0, fmt.Errorf("no /dev/kvm after loading %v: %w (does the emulated CPU offer SVM?)", cfg.Modules, err)
	}
	tty, err := os.OpenFile(cfg.TTY, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return 0, err
	}
	defer tty.Close()
	if err := makeRaw(tty); err != nil {
		return 0, fmt.Errorf("%s: %w", cfg.TTY, err)
	}
	fmt.Fprintln(console, hostproto.ReadyMarker)
	cmd := exec.Command(cfg.Args[0], cfg.Args[1:]...)
	cmd.Env = cfg.Env
	cmd.Dir = cfg.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	// No controlling terminal: when a session leader owning the port
	// exits, the port is hung up and its last output could not be drained.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	status := reap(cmd.Process.Pid)
	// Let the payload's last bytes leave the UART before power-off.
	if err := drain(tty); err != nil {
		return status, fmt.Errorf("draining %s: %w", cfg.TTY, err)
	}
	return status, nil
}

// drain waits until the port has sent what was written to it (tcdrain),
// again when a signal interrupts the wait: a child exiting sends PID 1
// SIGCHLD, which the Go runtime takes with SA_RESTART, but TCSBRK is not
// restarted (seen: "draining /dev/ttyS1: interrupted system call").
func drain(tty *os.File) error {
	for {
		err := unix.IoctlSetInt(int(tty.Fd()), unix.TCSBRK, 1)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// reap waits for pid, also collecting orphans re-parented to PID 1.
func reap(pid int) int {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return hostproto.StatusSetupFailed
		}
		if got != pid {
			continue
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("loading %s: %w", path, err)
	}
	return nil
}

// makeRaw passes bytes through the serial port unchanged at 115200 baud.
func makeRaw(tty *os.File) error {
	fd := int(tty.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CBAUD
	t.Cflag |= unix.CS8 | unix.B115200
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
