// Package jail confines a VMM as Firecracker's jailer does, in two
// processes: a small supervisor, which stays root, and the VMM, its child.
//
// The supervisor (Supervise) creates the VMM's cgroup and an empty
// folder, then starts the VMM, the same program with the same arguments,
// in mount, PID, IPC and UTS namespaces of its own (and a network
// namespace when it has no TAP to reach), inside the cgroup. It forwards
// SIGINT, SIGTERM and SIGHUP, waits, and removes the cgroup and the
// folder at exit whatever the VMM's end.
//
// The VMM opens what it needs as root, then, before any vCPU runs, calls
// Enter: a tmpfs on the folder holding only bind mounts of what it still
// needs by path and a /proc of its own namespace, pivot_root into it,
// every capability dropped, the user switched, no_new_privs, and a
// Landlock ruleset where the kernel has Landlock.
//
// A Go process is multi-threaded from its start, so the namespaces are
// made by clone when the VMM starts, not by unshare, which refuses a
// mount namespace to threads that share their file system state.
package jail

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// EnvSpec is the environment variable that carries the Spec from the
// supervisor to the VMM; the VMM finds out that it is one from it.
const EnvSpec = "GVMM_JAIL_SPEC"

// Spec is one confinement.
type Spec struct {
	UID, GID int
	// Root is the empty host folder the VMM mounts its root on.
	Root string
	// Binds are what the VMM still needs by path.
	Binds []Bind
	// NewNet gives the VMM a network namespace of its own: no TAP.
	NewNet bool
	// Limits, when not zero, put the VMM in a cgroup of its own.
	Limits Limits
	// Leftovers are sockets the VMM made and cannot remove from inside
	// its root: the supervisor removes them once it ended.
	Leftovers []string
}

// Bind is a host file or folder the VMM sees at the same path.
type Bind struct {
	Path     string
	Writable bool
}

// Limits are the VMM's share of the host; zero means no limit.
type Limits struct {
	CPUs        float64 // cgroup v2 cpu.max, in CPUs
	MemoryBytes uint64  // cgroup v2 memory.max
}

// IsZero reports whether l limits nothing.
func (l Limits) IsZero() bool { return l.CPUs == 0 && l.MemoryBytes == 0 }

// Encode is the spec as EnvSpec's value.
func (s Spec) Encode() (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("jail: %w", err)
	}
	return string(b), nil
}

// Decode reads EnvSpec's value.
func Decode(v string) (Spec, error) {
	var s Spec
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return Spec{}, fmt.Errorf("jail: %s: %w", EnvSpec, err)
	}
	if err := s.check(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// ErrRootUser is a --user of root, which would confine nothing.
var ErrRootUser = errors.New("the VMM must not run as root (uid or gid 0)")

func (s Spec) check() error {
	if s.UID <= 0 || s.GID <= 0 {
		return fmt.Errorf("jail: %d:%d: %w", s.UID, s.GID, ErrRootUser)
	}
	if !filepath.IsAbs(s.Root) {
		return fmt.Errorf("jail: root %q is not an absolute path", s.Root)
	}
	for _, b := range s.Binds {
		if !filepath.IsAbs(b.Path) || filepath.Clean(b.Path) != b.Path || b.Path == "/" {
			return fmt.Errorf("jail: bind %q: want a clean absolute path other than /", b.Path)
		}
	}
	return nil
}

// ParseUser reads UID[:GID], each a number or a name; a user alone takes
// its primary group, or the group of the same number when it has no
// entry in the user database.
func ParseUser(v string) (uid, gid int, err error) {
	us, gs, hasGroup := strings.Cut(v, ":")
	if us == "" || (hasGroup && gs == "") {
		return 0, 0, fmt.Errorf("--user %q: want UID[:GID]", v)
	}
	primary := ""
	if uid, err = strconv.Atoi(us); err != nil {
		u, lerr := user.Lookup(us)
		if lerr != nil {
			return 0, 0, fmt.Errorf("--user %q: %w", v, lerr)
		}
		uid, _ = strconv.Atoi(u.Uid)
		primary = u.Gid
	} else if u, lerr := user.LookupId(us); lerr == nil {
		primary = u.Gid
	} else {
		primary = us
	}
	if !hasGroup {
		gs = primary
	}
	if gid, err = strconv.Atoi(gs); err != nil {
		g, lerr := user.LookupGroup(gs)
		if lerr != nil {
			return 0, 0, fmt.Errorf("--user %q: %w", v, lerr)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	if uid <= 0 || gid <= 0 {
		return 0, 0, fmt.Errorf("--user %q: %w", v, ErrRootUser)
	}
	return uid, gid, nil
}

// mergeBinds sorts binds parents first, a path listed twice once
// (writable if either is), so that a folder inside another one is
// mounted on top of it.
func mergeBinds(binds []Bind) []Bind {
	byPath := map[string]bool{}
	for _, b := range binds {
		byPath[b.Path] = byPath[b.Path] || b.Writable
	}
	out := make([]Bind, 0, len(byPath))
	for p, w := range byPath {
		out = append(out, Bind{Path: p, Writable: w})
	}
	slices.SortFunc(out, func(a, b Bind) int {
		if d := strings.Count(a.Path, "/") - strings.Count(b.Path, "/"); d != 0 {
			return d
		}
		return strings.Compare(a.Path, b.Path)
	})
	return out
}
