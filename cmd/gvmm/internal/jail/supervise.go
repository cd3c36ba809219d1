package jail

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/cgroup2"
)

// Forwarded are the signals the supervisor passes on to the VMM.
var Forwarded = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP}

// keptEnv are the variables a confined VMM still reads: where the
// user's kernel cache is, and the Go runtime's settings. The rest of the
// admin's environment (credentials, proxies, session sockets) stays with
// the supervisor, as Firecracker's jailer clears it.
var keptEnv = []string{"HOME", "XDG_CACHE_HOME", "GODEBUG", "GOTRACEBACK", "GOMAXPROCS", "GOGC", "GOMEMLIMIT"}

// vmmEnv is environ with only keptEnv's variables.
func vmmEnv(environ []string) []string {
	var env []string
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); slices.Contains(keptEnv, k) {
			env = append(env, kv)
		}
	}
	return env
}

// Supervise runs argv (this program's arguments, argv[0] first) again as
// a confined VMM, and returns its exit status: its own code, or 128 plus
// the signal that killed it, as a shell says. The VMM's stdin, stdout and
// stderr are this process's.
func Supervise(spec Spec, argv []string, log *slog.Logger) (int, error) {
	root, err := os.MkdirTemp("", "gvmm-jail-")
	if err != nil {
		return 0, fmt.Errorf("jail: %w", err)
	}
	defer func() {
		if err := os.Remove(root); err != nil {
			log.Warn("removing the VMM's root folder", "err", err)
		}
	}()
	spec.Root = root
	if err := spec.check(); err != nil {
		return 0, err
	}
	env, err := spec.Encode()
	if err != nil {
		return 0, err
	}
	cmd := &exec.Cmd{
		Path:   "/proc/self/exe",
		Args:   argv,
		Env:    append(vmmEnv(os.Environ()), EnvSpec+"="+env),
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
			// The VMM does not outlive its supervisor, which alone
			// removes the cgroup.
			Pdeathsig: unix.SIGKILL,
		},
	}
	if spec.NewNet {
		cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWNET
	}
	if !spec.Limits.IsZero() {
		cg, err := createCgroup(cgroup2.Root, cgroupPrefix+strconv.Itoa(os.Getpid()), spec.Limits)
		if err != nil {
			return 0, err
		}
		defer func() {
			if err := cg.remove(); err != nil {
				log.Warn("removing the VMM's cgroup", "err", err)
			}
		}()
		dir, err := os.Open(cg.dir)
		if err != nil {
			return 0, fmt.Errorf("jail: %w", err)
		}
		defer dir.Close()
		// clone3 starts the VMM inside: no moment outside its limits.
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(dir.Fd())
		log.Debug("VMM cgroup", "path", cg.dir)
	}
	defer removeLeftovers(spec.Leftovers, log)

	// Pdeathsig follows the thread that started the child, not the
	// process: keep this one until the child ended.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, Forwarded...)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("jail: starting the VMM: %w", err)
	}
	log.Debug("VMM started", "pid", cmd.Process.Pid, "uid", spec.UID, "gid", spec.GID)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigs:
				if err := cmd.Process.Signal(s); err != nil && !errors.Is(err, os.ErrProcessDone) {
					log.Warn("forwarding a signal to the VMM", "signal", s, "err", err)
				}
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		ws := exit.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			log.Error("the VMM was killed", "signal", ws.Signal().String())
			return 128 + int(ws.Signal()), nil
		}
		return ws.ExitStatus(), nil
	}
	return 0, fmt.Errorf("jail: waiting for the VMM: %w", err)
}

// removeLeftovers removes the sockets the VMM could not.
func removeLeftovers(paths []string, log *slog.Logger) {
	for _, p := range paths {
		st, err := os.Lstat(p)
		if err != nil || st.Mode().Type() != fs.ModeSocket {
			continue
		}
		if err := os.Remove(p); err != nil {
			log.Warn("removing the VMM's socket", "path", p, "err", err)
		}
	}
}
