package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gvmm-dev/gvmm/internal/cgroup2"
)

const (
	// cgroupFile holds, in the bundle, the cgroup the shim daemon was
	// put in, for its Delete and for shim delete to remove.
	cgroupFile = "gvmm-cgroup"
)

// accounted are the controllers enabled down to the shim's cgroup, so
// that its CPU, memory, processes and I/O are counted there.
var accounted = []string{"cpu", "memory", "pids", "io"}

var (
	// errNoUnifiedCgroups: the host has no cgroup v2 hierarchy at
	// cgroup2.Root.
	errNoUnifiedCgroups = errors.New("no cgroup v2 hierarchy at " + cgroup2.Root)
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
// is the root: it must name a cgroup beneath cgroup2.Root.
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
	if !cgroup2.Mounted(cgroup2.Root) {
		return errNoUnifiedCgroups
	}
	dir := cgroup2.Root
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
// controllers dir has, each on its own. It is best effort: a cgroup with
// processes of its own (not the root) cannot, and its children are
// accounted without.
func enableControllers(dir string) {
	have, err := cgroup2.Controllers(dir)
	if err != nil {
		return
	}
	for _, c := range accounted {
		if slices.Contains(have, c) {
			_ = cgroup2.EnableControllers(dir, []string{c})
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
		if err := os.WriteFile(filepath.Join(cgroup2.Root, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("leaving cgroup %s: %w", path, err)
		}
	}
	// A process that just ended (the pod's mounter, a killed shim) may
	// hold the cgroup for a moment.
	if err := cgroup2.Remove(filepath.Join(cgroup2.Root, path)); err != nil {
		return err
	}
	return os.Remove(filepath.Join(bundle, cgroupFile))
}
