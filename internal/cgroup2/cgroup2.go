// Package cgroup2 is what gvmm's VMM supervisor and its containerd shim
// do in the cgroup v2 file system: enable controllers on the way down to
// a cgroup, and remove one whose last process just ended. Both write the
// files themselves: containerd's cgroups library would bring systemd's
// D-Bus client and an eBPF loader with it.
package cgroup2

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Root is where the unified (v2) hierarchy is mounted.
const Root = "/sys/fs/cgroup"

// Mounted reports whether dir is the root of a cgroup v2 hierarchy.
func Mounted(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// Controllers are the controllers dir's cgroup can hand to its children.
func Controllers(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroup2: %w", err)
	}
	return strings.Fields(string(b)), nil
}

// EnableControllers enables for the children of dir's cgroup those of
// want it has not enabled yet, in one write: all or none. The kernel
// refuses a controller dir lacks, and any in a cgroup with processes of
// its own (but the root).
func EnableControllers(dir string, want []string) error {
	file := filepath.Join(dir, "cgroup.subtree_control")
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("cgroup2: %w", err)
	}
	have := strings.Fields(string(b))
	var add []string
	for _, c := range want {
		if !slices.Contains(have, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := os.WriteFile(file, []byte(strings.Join(add, " ")), 0); err != nil {
		return fmt.Errorf("cgroup2: enabling %s in %s: %w", strings.Join(add, " "), dir, err)
	}
	return nil
}

// removeWait bounds how long Remove waits for the kernel to let go of a
// cgroup whose last process just ended: its exit is still being torn
// down, and rmdir says EBUSY.
const removeWait = 5 * time.Second

// Remove removes the cgroup dir once its processes are gone; one already
// gone is no error.
func Remove(dir string) error {
	deadline := time.Now().Add(removeWait)
	for {
		err := os.Remove(dir)
		switch {
		case err == nil, errors.Is(err, os.ErrNotExist):
			return nil
		case errors.Is(err, unix.EBUSY) && time.Now().Before(deadline):
			time.Sleep(20 * time.Millisecond)
		default:
			return fmt.Errorf("cgroup2: removing %s: %w", dir, err)
		}
	}
}
