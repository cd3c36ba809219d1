package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/jail"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/seccomp"
	"github.com/gvmm-dev/gvmm/machine/vmdef"
)

// confineFlags are gvmm run's confinement flags.
type confineFlags struct {
	fs          *pflag.FlagSet
	user        *string
	cpuLimit    *float64
	memoryLimit *string
}

func addConfineFlags(fs *pflag.FlagSet) *confineFlags {
	return &confineFlags{
		fs:          fs,
		user:        fs.String("user", "", "confine the VMM and run it as `UID[:GID]` (numbers or names; needs root): own mount, PID, IPC and UTS namespaces, a root holding only what it needs, no capabilities, Landlock"),
		cpuLimit:    fs.Float64("cpu-limit", 0, "limit the VMM to `N` CPUs of time (cgroup v2 cpu.max; with --user)"),
		memoryLimit: fs.String("memory-limit", "", "limit the VMM's memory, guest RAM included, to `SIZE` (cgroup v2 memory.max; with --user)"),
	}
}

// resolve applies the flags over the definition's user and limits (def
// is nil without --config).
func (f *confineFlags) resolve(def *vmdef.Definition) (user string, limits jail.Limits, err error) {
	if def != nil {
		user, limits = def.User, jail.Limits{CPUs: def.Limits.CPUs, MemoryBytes: def.Limits.Memory}
	}
	if f.fs.Changed("user") {
		user = *f.user
	}
	if f.fs.Changed("cpu-limit") {
		if err := vmdef.ParseCPULimit(*f.cpuLimit); err != nil {
			return "", limits, fmt.Errorf("--cpu-limit %w", err)
		}
		limits.CPUs = *f.cpuLimit
	}
	if f.fs.Changed("memory-limit") {
		if limits.MemoryBytes, err = machine.ParseSize(*f.memoryLimit); err != nil {
			return "", limits, fmt.Errorf("--memory-limit: %w", err)
		}
	}
	if user == "" && !limits.IsZero() {
		return "", limits, fmt.Errorf("--cpu-limit and --memory-limit (the definition's limits) need --user (its user): the limits go with the confined VMM")
	}
	return user, limits, nil
}

// runFiles are the paths gvmm run was given outside the VM's config.
type runFiles struct {
	apiSocket, consoleSocket, consoleLog, logFile string
	snapshotDir                                   string // absolute
}

// jailSpec is what a confined VMM of cfg keeps by path: the folders of
// its logs (rotated), of its vsock socket (a guest connecting to host
// port P dials SOCKET_P) and its shares (read again through /proc/self/fd
// and checked by Landlock); and what the supervisor removes after it.
func jailSpec(uid, gid int, limits jail.Limits, cfg machine.Config, files runFiles) jail.Spec {
	s := jail.Spec{UID: uid, GID: gid, Limits: limits, NewNet: len(cfg.Nets) == 0}
	for _, p := range []string{files.consoleLog, files.logFile} {
		if p != "" {
			s.Binds = append(s.Binds, jail.Bind{Path: absDir(p), Writable: true})
		}
	}
	for _, sh := range cfg.Shares {
		s.Binds = append(s.Binds, jail.Bind{Path: filepath.Clean(sh.Path), Writable: !sh.ReadOnly})
	}
	if files.snapshotDir != "" {
		s.Binds = append(s.Binds, jail.Bind{Path: files.snapshotDir, Writable: true})
	}
	for _, p := range []string{files.apiSocket, files.consoleSocket} {
		if p != "" {
			s.Leftovers = append(s.Leftovers, p)
		}
	}
	if v := cfg.Vsock; v != nil && v.Socket != "" {
		s.Binds = append(s.Binds, jail.Bind{Path: absDir(v.Socket), Writable: true})
		s.Leftovers = append(s.Leftovers, v.Socket)
	}
	return s
}

// snapshotPlace is where the VMM may save snapshots: anywhere it may
// write unless it is confined, then only inside the folder of
// --snapshot-dir (dir), the one writable place in its root the
// supervisor made for them.
type snapshotPlace struct {
	confined bool
	dir      string
}

func newSnapshotPlace(spec *jail.Spec, dir string) snapshotPlace {
	return snapshotPlace{confined: spec != nil, dir: dir}
}

// check refuses a snapshot folder the VMM cannot write, with what to do.
func (p snapshotPlace) check(path string) error {
	if !p.confined {
		return nil
	}
	if p.dir == "" {
		return errors.New("a confined VMM (--user) saves snapshots only inside its --snapshot-dir, which it was not given")
	}
	if rel, err := filepath.Rel(p.dir, path); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("a confined VMM (--user) saves snapshots only inside its --snapshot-dir %s", p.dir)
	}
	return nil
}

// absDir is the absolute folder of path.
func absDir(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil { // no working folder: the path was checked relative to nothing
		abs = filepath.Clean(path)
	}
	return filepath.Dir(abs)
}

// beforeRun is what the VMM does once everything is open and before the
// first vCPU runs: confine itself when spec is set, then install the
// seccomp filter when seccompOn. A restore's cfg is the snapshot's.
func beforeRun(spec *jail.Spec, seccompOn bool, cfg machine.Config, log *slog.Logger) func(reopen []string) error {
	return func(reopen []string) error {
		if spec != nil {
			landlockErr, err := jail.Enter(*spec, reopen)
			if err != nil {
				return err
			}
			if landlockErr != nil {
				log.Warn("running without Landlock", "err", landlockErr)
			}
			log.Info("VMM confined", "uid", spec.UID, "gid", spec.GID, "landlock", landlockErr == nil)
			if afterConfine != nil {
				afterConfine(log)
			}
		}
		if !seccompOn {
			return nil
		}
		// From here on a call outside the list ends the process with a
		// line naming it.
		rules := vmmRules(cfg)
		if err := seccomp.Install(rules); err != nil {
			return fmt.Errorf("installing the seccomp filter (--seccomp=off runs without it): %w", err)
		}
		log.Debug("seccomp filter installed", "rules", len(rules))
		return nil
	}
}

// vmmRules is the seccomp allow-list of a VMM running cfg.
func vmmRules(cfg machine.Config) []seccomp.Rule {
	rules := seccomp.VMM()
	if len(cfg.Shares) > 0 {
		rules = append(rules, seccomp.Shares()...)
	}
	if len(cfg.Nets) > 0 {
		rules = append(rules, seccomp.Nets()...)
	}
	for _, r := range seccomp.Snapshots() {
		// Shares allow some of them already, and a filter lists a call once.
		if !slices.ContainsFunc(rules, func(x seccomp.Rule) bool { return x.Syscall == r.Syscall }) {
			rules = append(rules, r)
		}
	}
	return rules
}

// afterConfine, set only by a test build (escapetest), runs inside the
// confined VMM to try what the confinement forbids.
var afterConfine func(*slog.Logger)

// confinedSpec is the spec the supervisor passed down, nil when this
// process is not a confined VMM.
func confinedSpec() (*jail.Spec, error) {
	v, ok := os.LookupEnv(jail.EnvSpec)
	if !ok {
		return nil, nil
	}
	s, err := jail.Decode(v)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// supervise runs this command again as a VMM confined as user, and
// waits for it: this process keeps the pid file, forwards signals and
// cleans up after it.
func supervise(user string, limits jail.Limits, cfg machine.Config, files runFiles, pidFile string, level slog.Level) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "gvmm run: --user %s: confining the VMM needs root\n", user)
		return exitUsage
	}
	uid, gid, err := jail.ParseUser(user)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gvmm run: %v\n", err)
		return exitUsage
	}
	if pidFile != "" {
		pf, err := state.CreatePIDFile(pidFile)
		if err != nil {
			log.Error("writing the pid file", "err", err)
			return exitFault
		}
		defer func() {
			if err := pf.Remove(); err != nil {
				log.Warn("removing the pid file", "err", err)
			}
		}()
	}
	code, err := jail.Supervise(jailSpec(uid, gid, limits, cfg, files), os.Args, log)
	// The VMM inherits --net fd=N at the same number: the Files that
	// parsing wrapped them in must not be collected, and close them,
	// before it started.
	runtime.KeepAlive(cfg.Nets)
	if err != nil {
		log.Error("confining the VMM", "err", err)
		return exitFault
	}
	return code
}

// DefaultVMMUser is the user gvmm start confines a VMM as when its
// definition names none and the host has one of this name.
const DefaultVMMUser = "gvmm"

// confineStart returns gvmm run's extra arguments for the VM def about
// to start as root: --user DefaultVMMUser when the definition names no
// user and the host has it, and --snapshot-dir, the run folder's
// snapshot folder. Both folders are given to the VMM's user, who rotates
// its logs in one and saves snapshots in the other.
func confineStart(def *vmdef.Definition, p state.Paths) ([]string, error) {
	if os.Geteuid() != 0 {
		return nil, nil // gvmm run refuses a user without root
	}
	name, extra := def.User, []string(nil)
	if name == "" {
		if _, err := user.Lookup(DefaultVMMUser); err != nil {
			return nil, nil
		}
		name, extra = DefaultVMMUser, []string{"--user", DefaultVMMUser}
	}
	uid, gid, err := jail.ParseUser(name)
	if err != nil {
		return nil, fmt.Errorf("the definition's user: %w", err)
	}
	if err := os.Chown(p.Dir, uid, gid); err != nil {
		return nil, fmt.Errorf("giving the run folder to the VMM's user: %w", err)
	}
	if err := os.Mkdir(p.Snapshots, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("the VMM's snapshot folder: %w", err)
	}
	if err := os.Chown(p.Snapshots, uid, gid); err != nil {
		return nil, fmt.Errorf("giving the snapshot folder to the VMM's user: %w", err)
	}
	return append(extra, "--snapshot-dir", p.Snapshots), nil
}
