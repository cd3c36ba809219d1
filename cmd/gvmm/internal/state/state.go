// Package state is gvmm's state folder: the VM definitions, and for each
// VM its lock and the run-time files of its VMM (pid, sockets, logs).
//
//	ROOT/vms/NAME.json       definitions
//	ROOT/locks/NAME.lock     serialises commands on one VM (flock)
//	ROOT/run/NAME/pid        the VMM's pid, flock-held by the VMM while it lives
//	ROOT/run/NAME/api.sock   its control API
//	ROOT/run/NAME/console.sock, console.log, vmm.log
//
// Every file is written atomically (temporary file, fsync, rename, fsync
// of the folder), so a crash leaves the old or the new version, never a
// mix. A VMM is alive exactly while its pid file is locked: a VMM killed
// by any means releases the lock, which is how a dead one is told from a
// running one without trusting a pid that may have been reused.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/machine/vmdef"
)

// DefaultRoot is the state folder unless EnvRoot or a flag says otherwise.
const DefaultRoot = "/var/lib/gvmm"

// EnvRoot names the environment variable that sets the state folder.
const EnvRoot = "GVMM_STATE_DIR"

// Errors callers branch on.
var (
	ErrNotDefined = errors.New("no VM of that name is defined")
	ErrExists     = errors.New("a VM of that name is already defined")
	ErrRunning    = errors.New("the VM is running")
	ErrBusy       = errors.New("another gvmm command is working on the VM")
)

// lockPoll is how often Lock retries a lock held by another command.
const lockPoll = 50 * time.Millisecond

// Dir is an open state folder.
type Dir struct{ root string }

// Open makes sure the state folder root and its subfolders exist, only
// accessible to their owner.
func Open(root string) (*Dir, error) {
	if root == "" {
		return nil, errors.New("state: empty state folder path")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	for _, sub := range []string{"", "vms", "locks", "run"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o700); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
	}
	return &Dir{root: abs}, nil
}

// Root is the state folder's absolute path.
func (d *Dir) Root() string { return d.root }

// DefinitionPath is where the definition of name is stored.
func (d *Dir) DefinitionPath(name string) string {
	return filepath.Join(d.root, "vms", name+".json")
}

// Paths are a VM's run-time files.
type Paths struct {
	Dir        string // holds the others
	PID        string
	API        string
	Console    string // the console socket
	ConsoleLog string
	VMMLog     string
	Crashed    string // a record of a VMM found dead
	// Snapshots is the one folder a confined VMM may save snapshots in;
	// gvmm snapshot moves them from there to where they were asked for.
	Snapshots string
}

// Paths returns the run-time files of name.
func (d *Dir) Paths(name string) Paths {
	dir := filepath.Join(d.root, "run", name)
	return Paths{
		Dir: dir, PID: filepath.Join(dir, "pid"), API: filepath.Join(dir, "api.sock"),
		Console: filepath.Join(dir, "console.sock"), ConsoleLog: filepath.Join(dir, "console.log"),
		VMMLog: filepath.Join(dir, "vmm.log"), Crashed: filepath.Join(dir, "crashed"),
		Snapshots: filepath.Join(dir, "snapshots"),
	}
}

// Names lists the defined VMs, sorted.
func (d *Dir) Names() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(d.root, "vms"))
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var names []string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && e.Type().IsRegular() && vmdef.CheckName(name) == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Load reads the definition of name.
func (d *Dir) Load(name string) (*vmdef.Definition, error) {
	if err := vmdef.CheckName(name); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	def, err := vmdef.ParseFile(d.DefinitionPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", name, ErrNotDefined)
	}
	return def, err
}

// WriteFile replaces path with data atomically and durably.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tmp := f.Name()
	err = func() error {
		defer f.Close()
		if _, err := f.Write(data); err != nil {
			return err
		}
		if err := f.Chmod(perm); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return f.Close()
	}()
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state: writing %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("state: syncing %s: %w", dir, err)
	}
	return nil
}

// Lock is the exclusive right to change one VM: define, start, stop, back
// up or undefine it. It is a flock, so a command that dies releases it.
type Lock struct {
	d    *Dir
	name string
	f    *os.File
}

// Lock takes name's lock, waiting while another command holds it until
// ctx is done (then the error wraps ErrBusy).
func (d *Dir) Lock(ctx context.Context, name string) (*Lock, error) {
	if err := vmdef.CheckName(name); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	path := filepath.Join(d.root, "locks", name+".lock")
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		err = flock(f, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// Undefine removes the file while holding it: a lock taken
			// on a removed file guards nothing.
			if same, err := isFile(f, path); err != nil || !same {
				f.Close()
				if err != nil {
					return nil, err
				}
				continue
			}
			return &Lock{d: d, name: name, f: f}, nil
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state: locking %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w (%w)", name, ErrBusy, context.Cause(ctx))
		case <-time.After(lockPoll):
		}
	}
}

// isFile reports whether path still names the open file f.
func isFile(f *os.File, path string) (bool, error) {
	fst, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("state: %w", err)
	}
	pst, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state: %w", err)
	}
	return os.SameFile(fst, pst), nil
}

// flock applies how to f without f.Fd, which would make f blocking.
func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if ferr = unix.Flock(int(fd), how); !errors.Is(ferr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// Unlock releases the lock.
func (l *Lock) Unlock() error { return l.f.Close() }

// Name is the VM the lock is for.
func (l *Lock) Name() string { return l.name }

// Define stores def, which must be named as the lock; a name already
// defined is refused with ErrExists.
func (l *Lock) Define(def *vmdef.Definition) error {
	if def.Name != l.name {
		return fmt.Errorf("state: defining %q under the lock of %q", def.Name, l.name)
	}
	path := l.d.DefinitionPath(l.name)
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s: %w", l.name, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: %w", err)
	}
	data, err := def.Marshal()
	if err != nil {
		return err
	}
	return WriteFile(path, data, 0o600)
}

// Undefine removes the definition, the VM's run-time files and its lock
// file; a running VM is refused with ErrRunning. The lock stays held
// until Unlock.
func (l *Lock) Undefine() error {
	path := l.d.DefinitionPath(l.name)
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", l.name, ErrNotDefined)
	}
	st, err := l.d.Status(l.name)
	if err != nil {
		return err
	}
	if st.State == Running {
		return fmt.Errorf("%s: %w (pid %d): shut it down or destroy it first", l.name, ErrRunning, st.PID)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.RemoveAll(l.d.Paths(l.name).Dir); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Remove(l.f.Name()); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return syncDir(filepath.Join(l.d.root, "vms"))
}

// RunState is what a VM's VMM is doing.
type RunState string

const (
	Stopped RunState = "stopped"
	Running RunState = "running" // the VMM lives; ask its API for more
	Crashed RunState = "crashed" // the VMM died without cleaning up
)

// Status is a VM's run state as the state folder shows it.
type Status struct {
	State RunState
	PID   int // Running and Crashed
}

// crashRecord is the content of Paths.Crashed, for list and for people.
type crashRecord struct {
	PID   int       `json:"pid"`
	Found time.Time `json:"found"`
}

// Status tells whether name's VMM runs, is stopped or died. It changes
// nothing: ClearStale cleans up after a dead VMM.
func (d *Dir) Status(name string) (Status, error) {
	p := d.Paths(name)
	pid, locked, err := probePID(p.PID)
	switch {
	case err != nil:
		return Status{}, err
	case pid != 0 && locked:
		return Status{State: Running, PID: pid}, nil
	case pid != 0:
		return Status{State: Crashed, PID: pid}, nil
	}
	data, err := os.ReadFile(p.Crashed)
	if errors.Is(err, fs.ErrNotExist) {
		return Status{State: Stopped}, nil
	}
	var rec crashRecord
	if err != nil || json.Unmarshal(data, &rec) != nil {
		return Status{State: Crashed}, nil // a damaged record still says so
	}
	return Status{State: Crashed, PID: rec.PID}, nil
}

// probePID reads a pid file and whether a live process holds its lock;
// pid is 0 when there is no pid file.
func probePID(path string) (pid int, locked bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("state: %w", err)
	}
	defer f.Close()
	var buf [32]byte
	n, _ := f.Read(buf[:])
	pid, err = strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		pid = -1 // unreadable: stale all the same
	}
	switch err := flock(f, unix.LOCK_SH|unix.LOCK_NB); {
	case errors.Is(err, unix.EWOULDBLOCK):
		return pid, true, nil
	case err != nil:
		return 0, false, fmt.Errorf("state: probing %s: %w", path, err)
	}
	return pid, false, nil
}

// ClearStale cleans up after a VMM that died without doing so itself:
// its pid file and sockets are removed and a crash record is left for
// list. It reports whether there was anything to clean.
func (l *Lock) ClearStale() (bool, error) {
	p := l.d.Paths(l.name)
	pid, locked, err := probePID(p.PID)
	if err != nil || pid == 0 || locked {
		return false, err
	}
	rec, err := json.Marshal(crashRecord{PID: max(pid, 0), Found: time.Now().UTC()})
	if err != nil {
		return false, fmt.Errorf("state: %w", err)
	}
	if err := WriteFile(p.Crashed, rec, 0o600); err != nil {
		return false, err
	}
	return true, l.RemoveRunFiles()
}

// RemoveRunFiles removes the pid file and sockets of a VMM that ended
// without removing them, as one killed does.
func (l *Lock) RemoveRunFiles() error {
	p := l.d.Paths(l.name)
	for _, f := range []string{p.API, p.Console, p.PID} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("state: %w", err)
		}
	}
	return syncDir(p.Dir)
}

// Prepare readies the run-time folder for a new VMM: created if needed,
// the crash record of the last run removed.
func (l *Lock) Prepare() (Paths, error) {
	p := l.d.Paths(l.name)
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return p, fmt.Errorf("state: %w", err)
	}
	if err := os.Remove(p.Crashed); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return p, fmt.Errorf("state: %w", err)
	}
	return p, nil
}

// PIDFile is a pid file its process holds locked until Remove or death.
type PIDFile struct {
	path string
	f    *os.File
}

// CreatePIDFile writes this process's pid to path atomically, already
// locked, so that no one sees it unlocked while the process lives. A
// pid file held by a live process is refused with ErrRunning.
func CreatePIDFile(path string) (*PIDFile, error) {
	if pid, locked, err := probePID(path); err != nil {
		return nil, err
	} else if locked {
		return nil, fmt.Errorf("%s: %w (pid %d)", path, ErrRunning, pid)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".pid.tmp-*")
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	err = func() error {
		if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			return err
		}
		if _, err := fmt.Fprintf(f, "%d\n", os.Getpid()); err != nil {
			return err
		}
		if err := f.Chmod(0o600); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return os.Rename(f.Name(), path)
	}()
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("state: writing pid file %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return &PIDFile{path: path, f: f}, nil
}

// Remove deletes the pid file, if it is still this one, then releases
// its lock: in that order, so that the file is never seen unlocked.
func (p *PIDFile) Remove() error {
	same, err := isFile(p.f, p.path)
	if err == nil && same {
		err = os.Remove(p.path)
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Names lists the VMs defined in the state folder root, as Dir.Names
// does, without creating the folder (shell completion asks): a folder
// that does not exist holds none.
func Names(root string) ([]string, error) {
	names, err := (&Dir{root: root}).Names()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return names, err
}
