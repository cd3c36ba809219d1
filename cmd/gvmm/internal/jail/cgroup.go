package jail

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/cgroup2"
)

// cgroupParent holds the VMMs' cgroups, directly under the root: a
// cgroup that holds processes (the supervisor's own, on a systemd host a
// session scope) cannot hand controllers to children of its own.
const cgroupParent = "gvmm"

// cpuPeriod is cpu.max's period in microseconds, the kernel's default.
const cpuPeriod = 100000

// cgroup is a VMM's cgroup folder.
type cgroup struct {
	dir string
}

// createCgroup makes the cgroup name under root/gvmm with limits l,
// enabling the cpu and memory controllers on the way down as needed.
func createCgroup(root, name string, l Limits) (*cgroup, error) {
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
		return nil, fmt.Errorf("jail: limits need cgroup v2 mounted on %s: %w", root, err)
	}
	parent := filepath.Join(root, cgroupParent)
	if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("jail: %w", err)
	}
	var want []string
	if l.CPUs > 0 {
		want = append(want, "cpu")
	}
	if l.MemoryBytes > 0 {
		want = append(want, "memory")
	}
	for _, dir := range []string{root, parent} {
		if err := cgroup2.EnableControllers(dir, want); err != nil {
			return nil, fmt.Errorf("jail: %w", err)
		}
	}
	removeStale(parent)
	c := &cgroup{dir: filepath.Join(parent, name)}
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("jail: %w", err)
	}
	if err := c.limit(l); err != nil {
		_ = c.remove()
		return nil, err
	}
	return c, nil
}

// cgroupPrefix starts a VMM's cgroup name; the supervisor's pid follows.
const cgroupPrefix = "vm-"

// removeStale removes what supervisors killed with SIGKILL left behind:
// the cgroups of supervisors that are gone. The kernel refuses to remove
// one that still holds a process.
func removeStale(parent string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		n, ok := strings.CutPrefix(e.Name(), cgroupPrefix)
		pid, err := strconv.Atoi(n)
		if !ok || err != nil || !e.IsDir() || pid <= 0 {
			continue
		}
		if unix.Kill(pid, 0) == unix.ESRCH {
			_ = os.Remove(filepath.Join(parent, e.Name()))
		}
	}
}

// cpuMax is cpu.max's content for cpus CPUs: a quota per period.
func cpuMax(cpus float64) string {
	return fmt.Sprintf("%d %d", max(int64(cpus*cpuPeriod), 1000), cpuPeriod)
}

func (c *cgroup) limit(l Limits) error {
	if l.CPUs > 0 {
		if err := c.write("cpu.max", cpuMax(l.CPUs)); err != nil {
			return err
		}
	}
	if l.MemoryBytes > 0 {
		if err := c.write("memory.max", strconv.FormatUint(l.MemoryBytes, 10)); err != nil {
			return err
		}
	}
	return nil
}

func (c *cgroup) write(file, v string) error {
	if err := os.WriteFile(filepath.Join(c.dir, file), []byte(v), 0); err != nil {
		return fmt.Errorf("jail: writing %q to %s: %w", v, filepath.Join(c.dir, file), err)
	}
	return nil
}

// remove deletes the cgroup once its processes are gone.
func (c *cgroup) remove() error {
	if err := cgroup2.Remove(c.dir); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	return nil
}
