package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The shim creates, joins and removes a cgroup with a mkdir, a write
// and a rmdir of its own: containerd's cgroups library would bring
// systemd's D-Bus client and an eBPF loader into the shim for that.

const (
	// cgroupRoot is where the unified (v2) hierarchy is mounted.
	cgroupRoot = "/sys/fs/cgroup"
	// cgroupFile holds, in the bundle, the cgroup the shim daemon was
	// put in, for its Delete and for shim delete to remove.
	cgroupFile = "gvmm-cgroup"
)

// accounted are the controllers enabled down to the shim's cgroup, so
// that its CPU, memory, processes and I/O are counted there.
var accounted = []string{"cpu", "memory", "pids", "io"}

var (
	// errNoUnifiedCgroups: the host has no cgroup v2 hierarchy at
	// cgroupRoot.
	errNoUnifiedCgroups = errors.New("no cgroup v2 hierarchy at " + cgroupRoot)
	// errSystemdCgroup: a cgroupsPath of systemd's form.
	errSystemdCgroup = errors.New("systemd's cgroup paths are not supported, only cgroupfs ones")
)

// specCgroup is the cgroup the spec names (linux.cgroupsPath), "" for
// none. The shim puts itself, the VMM, there: containerd and the kubelet
// find the sandbox's CPU and memory in the pod's cgroup, as with runc.
// Only cgroupfs paths are taken; systemd's "slice:prefix:name" needs
// systemd to make the unit.
func specCgroup(spec *specs.Spec) (string, error) {
	if spec.Linux == nil || spec.Linux.CgroupsPath == "" {
		return "", nil
	}
	p := spec.Linux.CgroupsPath
	if strings.Contains(p, ":") {
		return "", fmt.Errorf("cgroupsPath %q: %w", p, errSystemdCgroup)
	}
	if !filepath.IsAbs(p) {
		p = "/" + p // runc's reading of a relative path, from the root
	}
	if err := checkCgroup(p); err != nil {
		return "", fmt.Errorf("cgroupsPath: %w", err)
	}
	return p, nil
}

// checkCgroup refuses a cgroup path that is not absolute and clean, or
// is the root: it must name a cgroup beneath cgroupRoot.
func checkCgroup(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
		return fmt.Errorf("%q: want an absolute, clean path below the root cgroup", p)
	}
	return nil
}

// joinCgroup creates cgroup path (v2), enabling the accounted
// controllers down to it, and moves process pid into it; it records the
// cgroup in the bundle.
func joinCgroup(bundle, path string, pid int) error {
	var st unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return errNoUnifiedCgroups
	}
	dir := cgroupRoot
	for _, name := range strings.Split(path[1:], "/") {
		enableControllers(dir)
		dir = filepath.Join(dir, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", path, err)
		}
	}
	if err := os.WriteFile(filepath.Join(bundle, cgroupFile), []byte(path), 0o600); err != nil {
		_ = os.Remove(dir)
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		_ = os.Remove(dir)
		return fmt.Errorf("cgroup %s: adding the shim: %w", path, err)
	}
	return nil
}

// enableControllers enables for dir's children the accounted
// controllers dir has. It is best effort: a cgroup with processes of its
// own (not the root) cannot, and its children are accounted without.
func enableControllers(dir string) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return
	}
	have := strings.Fields(string(data))
	for _, c := range accounted {
		if slices.Contains(have, c) {
			_ = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0o644)
		}
	}
}

// removeCgroup removes the cgroup the bundle's file names, if any; self
// means the caller is the shim daemon in it, which first moves to the
// root cgroup (the only one where a process may sit beside children).
func removeCgroup(bundle string, self bool) error {
	data, err := os.ReadFile(filepath.Join(bundle, cgroupFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	path := string(data)
	if err := checkCgroup(path); err != nil {
		return fmt.Errorf("%s: %w", cgroupFile, err)
	}
	if self {
		if err := os.WriteFile(filepath.Join(cgroupRoot, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("leaving cgroup %s: %w", path, err)
		}
	}
	// A process that just ended (the pod's mounter, a killed shim) may
	// hold the cgroup for a moment: rmdir fails with EBUSY.
	for i := 0; ; i++ {
		err = os.Remove(filepath.Join(cgroupRoot, path))
		if err == nil || errors.Is(err, os.ErrNotExist) {
			break
		}
		if i == 50 {
			return fmt.Errorf("removing cgroup %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return os.Remove(filepath.Join(bundle, cgroupFile))
}
