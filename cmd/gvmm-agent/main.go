// Command gvmm-agent is the containerd shim's guest: PID 1 of the
// container's VM, or of a pod's. It mounts the VM's share (a 9p share
// of a folder in which the shim mounts each container's root file
// system), then serves the shim's calls on a vsock port (package
// internal/agent): it runs each container's process and its execs
// chrooted in its root, carries their stdio over vsock streams, a
// terminal when asked, signals, exit statuses and the guest's stats.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
	"github.com/gvmm-dev/gvmm/internal/guestimage"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "gvmm-agent: runs as a guest's PID 1, from the initramfs the containerd shim builds")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("gvmm-agent failed", "err", err)
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func run(log *slog.Logger) error {
	for _, m := range []struct{ src, dst, fstype, data string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", ""},
		{"devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=0666"},
	} {
		if err := mount(m.src, m.dst, m.fstype, 0, m.data); err != nil {
			return err
		}
	}
	if err := guestimage.LoadModules(); err != nil {
		return err
	}
	if err := mountShare(); err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: agent.Port}); err != nil {
		return fmt.Errorf("vsock bind to port %d: %w", agent.Port, err)
	}
	if err := unix.Listen(fd, 64); err != nil {
		return fmt.Errorf("vsock listen: %w", err)
	}
	s := newServer(log)
	go s.reap()
	for {
		nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err != nil {
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			return fmt.Errorf("vsock accept: %w", err)
		}
		go s.serve(os.NewFile(uintptr(nfd), "vsock"))
	}
}

func mount(src, dst, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", src, dst, err)
	}
	return nil
}
