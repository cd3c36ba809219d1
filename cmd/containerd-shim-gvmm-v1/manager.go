package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

// Files the shim keeps in the bundle, which containerd removes after
// the task's delete.
const (
	addressFile = "address"    // the shim's socket (the shim library's name)
	pidFile     = "shim.pid"   // the shim daemon, which is the VMM
	workDir     = "gvmm"       // the guest's initramfs
	shareFolder = "gvmm-share" // the VM's share: a folder per container's root
	// sandboxFile names, in a pod's container's bundle, the pod sandbox
	// whose shim and VM run it.
	sandboxFile = "gvmm-sandbox"
)

// manager is the shim binary's start and delete modes.
type manager struct{}

func (manager) Name() string { return runtimeName }

// Start starts the shim daemon for container id on its own socket and
// returns the socket's address; it runs in the bundle. A pod's container
// (CRI's annotations) gets its sandbox's shim, as with Kata: that shim
// runs it in the sandbox's VM.
func (manager) Start(ctx context.Context, id string, opts shim.StartOpts) (_ string, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	spec, err := readSpec(".")
	if err != nil {
		return "", err
	}
	if sandbox := podContainer(spec); sandbox != "" {
		if err := agent.CheckID(sandbox); err != nil {
			return "", fmt.Errorf("the annotation %s: %w", annotationSandboxID, err)
		}
		address, err := shim.SocketAddress(ctx, opts.Address, sandbox)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(sandboxFile, []byte(sandbox), 0o600); err != nil {
			return "", err
		}
		return address, shim.WriteAddress(addressFile, address)
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	address, err := shim.SocketAddress(ctx, opts.Address, id)
	if err != nil {
		return "", err
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		return "", fmt.Errorf("the shim's socket: %w", err)
	}
	// The daemon serves the socket: this process's copy closes without
	// removing it.
	socket.SetUnlinkOnClose(false)
	defer socket.Close()
	defer func() {
		if retErr != nil {
			_ = shim.RemoveSocket(address)
		}
	}()
	if err := shim.WriteAddress(addressFile, address); err != nil {
		return "", err
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	args := []string{"-namespace", ns, "-id", id, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir, cmd.Env = ".", os.Environ()
	cmd.ExtraFiles = []*os.File{f} // the shim library serves fd 3
	// Its own process group: containerd's signals to its group, and
	// the start mode's end, do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { _ = cmd.Wait() }()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return "", err
	}
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		return "", fmt.Errorf("the shim's OOM score: %w", err)
	}
	// The shim is the VMM: in the container's (the pod sandbox's)
	// cgroup, the VM's CPU and memory are accounted there.
	path, err := specCgroup(spec)
	if err == nil && path != "" {
		err = joinCgroup(".", path, cmd.Process.Pid)
	}
	// Without a cgroup v2 hierarchy, or with a systemd path, the shim
	// stays in containerd's cgroup; the daemon says so in its log (what
	// this mode prints, containerd takes for the address).
	if err != nil && !errors.Is(err, errSystemdCgroup) && !errors.Is(err, errNoUnifiedCgroups) {
		_ = cmd.Process.Kill()
		return "", err
	}
	return address, nil
}

// Stop is "shim delete", which containerd runs in the bundle when the
// shim daemon died or never answered: it ends a daemon still there (the
// VMM, so its guest too), unmounts the root file systems and removes the
// socket and the shim's files. For a pod's container, whose shim is its
// sandbox's, it unmounts the container's root from the sandbox's share
// and leaves the shim alone.
func (manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	bundle := "." // containerd runs it in the bundle, and names it too
	if o, ok := ctx.Value(shim.OptsKey{}).(shim.Opts); ok && o.BundlePath != "" {
		bundle = o.BundlePath
	}
	status := shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(unix.SIGKILL)}
	if sandbox, err := os.ReadFile(filepath.Join(bundle, sandboxFile)); err == nil {
		if err := agent.CheckID(string(sandbox)); err != nil {
			return status, fmt.Errorf("%s: %w", sandboxFile, err)
		}
		// Bundles are siblings, named by their containers' ids.
		abs, err := filepath.Abs(bundle)
		if err != nil {
			return status, err
		}
		if err := unmountRoot(filepath.Join(shareDir(filepath.Join(filepath.Dir(abs), string(sandbox))), id), unix.MNT_DETACH); err != nil {
			log.G(ctx).WithError(err).Warn("unmounting the root file system")
		}
		return status, os.Remove(filepath.Join(bundle, sandboxFile))
	}
	if err := killDaemon(filepath.Join(bundle, pidFile), id); err != nil {
		log.G(ctx).WithError(err).Warn("ending the shim daemon")
	}
	if err := removeCgroup(bundle, false); err != nil {
		log.G(ctx).WithError(err).Warn("removing the shim's cgroup")
	}
	if spec, err := readSpec(bundle); err == nil && specNetns(spec) != "" {
		if err := removeNetwork(specNetns(spec)); err != nil {
			log.G(ctx).WithError(err).Warn("removing the pod network's redirection")
		}
	}
	if err := removeShare(shareDir(bundle), unix.MNT_DETACH); err != nil {
		log.G(ctx).WithError(err).Warn("unmounting the root file systems")
	}
	if address, err := shim.ReadAddress(filepath.Join(bundle, addressFile)); err == nil {
		if err := shim.RemoveSocket(address); err != nil {
			log.G(ctx).WithError(err).Warn("removing the shim's socket")
		}
	}
	for _, f := range []string{workDir, pidFile} {
		if err := os.RemoveAll(filepath.Join(bundle, f)); err != nil {
			log.G(ctx).WithError(err).Warn("removing the shim's files")
		}
	}
	return status, nil
}

// killDaemon kills the shim daemon of container id named in the pid
// file, when that process is still the daemon (pids are reused).
func killDaemon(pidFile, id string) error {
	data, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("%s: %q is no pid", pidFile, data)
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nil // it ended
	}
	args := strings.Split(string(cmdline), "\x00")
	if !isDaemonOf(args, id) {
		return nil
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
		return err
	}
	// Wait for the kernel to release its mounts and files.
	for i := 0; i < 100; i++ {
		if err := unix.Kill(pid, 0); err == unix.ESRCH {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("the shim daemon %d did not end", pid)
}

// isDaemonOf reports whether args are this binary's daemon mode for id.
func isDaemonOf(args []string, id string) bool {
	if len(args) == 0 || filepath.Base(args[0]) != filepath.Base(os.Args[0]) {
		return false
	}
	for i, a := range args {
		if (a == "-id" || a == "--id") && i+1 < len(args) && args[i+1] == id {
			return true
		}
	}
	return false
}

// shareDir is the folder a bundle's VM shares.
func shareDir(bundle string) string { return filepath.Join(bundle, shareFolder) }

// removeShare unmounts every container's root in share (umount2 flags,
// see unmountRoot) and removes it. Removing folder by folder, never
// recursively, cannot reach into a root file system still mounted.
func removeShare(share string, flags int) error {
	ents, err := os.ReadDir(share)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, unmountRoot(filepath.Join(share, e.Name()), flags))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.Remove(share)
}
