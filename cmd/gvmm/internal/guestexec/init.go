package guestexec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/gvmm-dev/gvmm/internal/guestimage"
)

// Where the init puts things in the initramfs.
const (
	controlDir = "/gvmm"
	lowerDir   = "/lower"
	rwDir      = "/rw"
	rootDir    = "/root"
	heldDir    = "/held"
	// p9Options are the 9p mount options: msize the most 9pnet_virtio
	// can post in one chain (125 pages), within the device's limit.
	p9Options = "trans=virtio,version=9p2000.L,msize=512000"
)

// Exit statuses the init reports for COMMAND itself, as shells do.
const (
	statusNotFound    = 127
	statusNotRunnable = 126
)

// IsInit reports whether this process is the guest's init.
func IsInit() bool { return os.Getpid() == 1 }

// Init is PID 1 of gvmm exec's guest: it sets the root up, runs COMMAND
// on the console, leaves its status in the control folder and powers
// off. It never returns; a failure is written on the console and the
// machine powers off without a status, which gvmm reports.
func Init() {
	if err := initGuest(); err != nil {
		fmt.Fprintf(os.Stderr, "gvmm exec: guest init: %v\n", err)
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func initGuest() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := mount(m.src, m.dst, m.fstype, 0, ""); err != nil {
			return err
		}
	}
	if err := guestimage.LoadModules(); err != nil {
		return err
	}
	if err := mount(ControlTag, controlDir, "9p", 0, p9Options); err != nil {
		return err
	}
	ctl, err := os.Open(controlDir)
	if err != nil {
		return err
	}
	defer ctl.Close()
	var req Request
	data, err := os.ReadFile(filepath.Join(controlDir, RequestFile))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &req); err != nil {
		return fmt.Errorf("%s: %w", RequestFile, err)
	}
	if len(req.Args) == 0 {
		return errors.New("no command")
	}
	if err := setupRoot(req); err != nil {
		return err
	}
	if err := rawConsole(); err != nil {
		return err
	}
	if err := markReady(ctl); err != nil {
		return err
	}
	stdin := os.Stdin
	if req.StdinPipe {
		if stdin, err = pipeStdin(os.Stdin, ctl); err != nil {
			return err
		}
	}
	stderr, err := dialStderr()
	if err != nil {
		return err
	}
	status := run(req, stdin, stderr)
	stderr.Close() // the host's copy ends: COMMAND's stderr is complete
	return writeStatus(ctl, status)
}

// dialStderr connects to the host's StderrPort over vsock.
func dialStderr() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("stderr: vsock socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_HOST, Port: StderrPort}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stderr: connecting to the host's vsock port %d: %w", StderrPort, err)
	}
	return os.NewFile(uintptr(fd), "stderr"), nil
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

// setupRoot builds the new root at rootDir and moves into it.
func setupRoot(req Request) error {
	if req.RW {
		if err := mount(RootTag, rootDir, "9p", 0, p9Options); err != nil {
			return err
		}
	} else {
		if err := mount(RootTag, lowerDir, "9p", unix.MS_RDONLY, p9Options); err != nil {
			return err
		}
		if err := mount("tmpfs", rwDir, "tmpfs", 0, "mode=0755"); err != nil {
			return err
		}
		for _, d := range []string{rwDir + "/upper", rwDir + "/work"} {
			if err := os.Mkdir(d, 0o755); err != nil {
				return err
			}
		}
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lowerDir, rwDir, rwDir)
		if err := mount("overlay", rootDir, "overlay", 0, opts); err != nil {
			return err
		}
	}
	// The guest's own /tmp and /run would hide the host's folder COMMAND
	// runs in, were it below them: it is held by a bind mount meanwhile.
	held := ""
	for _, own := range []string{"/tmp", "/run"} {
		if req.Dir == own || strings.HasPrefix(req.Dir, own+"/") {
			held = heldDir
			if err := mount(rootDir+req.Dir, held, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return err
			}
		}
	}
	for _, m := range []struct{ src, dst, fstype, data string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", ""},
		{"devpts", "/dev/pts", "devpts", "ptmxmode=0666"},
		{"tmpfs", "/tmp", "tmpfs", "mode=1777"},
		{"tmpfs", "/run", "tmpfs", "mode=0755"},
	} {
		if err := mount(m.src, rootDir+m.dst, m.fstype, 0, m.data); err != nil {
			return err
		}
	}
	if held != "" {
		if err := mount(held, rootDir+req.Dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return err
		}
	}
	for _, m := range req.Mounts {
		if err := unix.Mount(m.Tag, rootDir+m.Path, "9p", 0, p9Options); err != nil {
			return fmt.Errorf("mount share %s on %s: %w", m.Tag, m.Path, err)
		}
	}
	if err := unix.Chdir(rootDir); err != nil {
		return err
	}
	return unix.Chroot(".")
}

// rawConsole passes the console's bytes through unchanged, both ways:
// no echo, no line editing, no CR/LF translation, no signal keys.
func rawConsole() error {
	if _, err := term.MakeRaw(0); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// run runs COMMAND in the request's folder and environment, its stdout
// on the console, and returns its exit status: 128+N for signal N.
func run(req Request, stdin, stderr *os.File) int {
	cmd := exec.Command(req.Args[0], req.Args[1:]...)
	cmd.Env, cmd.Dir = req.Env, req.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, os.Stdout, stderr
	if path := lookPath(req.Args[0], req.Env); path != "" {
		cmd.Path, cmd.Err = path, nil
	}
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exit.ExitCode()
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(stderr, "gvmm exec: %s: command not found\n", req.Args[0])
		return statusNotFound
	}
	fmt.Fprintf(stderr, "gvmm exec: %s: %v\n", req.Args[0], err)
	return statusNotRunnable
}

// lookPath finds name in the request's PATH, not the init's own.
func lookPath(name string, env []string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, kv := range env {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			for _, dir := range filepath.SplitList(p) {
				f := filepath.Join(dir, name)
				if st, err := os.Stat(f); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
					return f
				}
			}
		}
	}
	return ""
}

// writeStatus leaves status in the control folder, through the
// descriptor opened before the root changed.
func writeStatus(ctl *os.File, status int) error {
	fd, err := unix.Openat(int(ctl.Fd()), StatusFile, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	f := os.NewFile(uintptr(fd), StatusFile)
	if _, err := fmt.Fprintf(f, "%d\n", status); err != nil {
		f.Close()
		return fmt.Errorf("status: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
