package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

// maxProcesses bounds the execs the shim may keep at once.
const maxProcesses = 1024

// server holds the containers (one, or a pod's) and their processes:
// each one's init ("") and execs.
type server struct {
	log *slog.Logger
	// mu guards containers, procs and, across a start, the link of a new
	// pid to its process, so that the reaper never sees a pid it cannot
	// place.
	mu         sync.Mutex
	containers map[string]string // id: its root in the guest
	procs      map[procKey]*process
	networked  bool
}

// procKey names a process: its container and its exec id ("" the init).
type procKey struct{ container, exec string }

// process is one process of the container, from create to delete.
type process struct {
	spec agent.Process
	root string // the container's root, its chroot
	// The agent's ends: stdin's writer (the terminal's master with a
	// TTY), stdout's and stderr's readers.
	stdin          io.WriteCloser
	stdout, stderr io.ReadCloser
	pty            console.Console
	// child are the process's own ends, closed here once it started.
	child     []*os.File
	closeIn   sync.Once
	pid       int
	exited    chan struct{}
	status    int
	exitedAt  time.Time
	startOnce bool
}

func newServer(log *slog.Logger) *server {
	return &server{log: log, containers: map[string]string{}, procs: map[procKey]*process{}}
}

// serve answers one connection's request.
func (s *server) serve(conn *os.File) {
	defer conn.Close()
	var req agent.Request
	if err := agent.Read(conn, &req); err != nil {
		s.log.Warn("a bad request", "err", err)
		return
	}
	resp, stream := s.handle(&req)
	if err := agent.Write(conn, resp); err != nil || resp.Error != "" || stream == nil {
		return
	}
	stream(conn)
}

// handle carries out req; stream, when not nil, then runs on the
// connection for a stdio op.
func (s *server) handle(req *agent.Request) (resp agent.Response, stream func(*os.File)) {
	fail := func(err error) (agent.Response, func(*os.File)) {
		return agent.Response{Error: err.Error(), NotFound: errors.Is(err, agent.ErrNotFound)}, nil
	}
	switch req.Op {
	case agent.OpCreate:
		if err := s.create(req); err != nil {
			return fail(err)
		}
		return agent.Response{}, nil
	case agent.OpNetwork:
		if err := s.network(req.Network); err != nil {
			return fail(err)
		}
		return agent.Response{}, nil
	case agent.OpPids:
		pids, err := s.containerPids(req.ContainerID)
		if err != nil {
			return fail(err)
		}
		return agent.Response{Pids: pids}, nil
	case agent.OpStats:
		st, err := guestStats()
		if err != nil {
			return fail(err)
		}
		return agent.Response{Stats: st}, nil
	}
	key := procKey{req.ContainerID, req.ID}
	p, err := s.get(key)
	if err != nil {
		return fail(err)
	}
	switch req.Op {
	case agent.OpStdin:
		if p.stdin == nil {
			return fail(fmt.Errorf("process %q has no stdin", req.ID))
		}
		return agent.Response{}, func(c *os.File) {
			_, _ = io.Copy(p.stdin, c)
			p.closeStdin()
		}
	case agent.OpStdout, agent.OpStderr:
		r := p.stdout
		if req.Op == agent.OpStderr {
			r = p.stderr
		}
		if r == nil {
			return fail(fmt.Errorf("process %q has no %s", req.ID, req.Op))
		}
		return agent.Response{}, func(c *os.File) {
			// A terminal's master reads EIO once the last slave closed:
			// that is its end.
			_, _ = io.Copy(c, r)
		}
	case agent.OpStart:
		pid, err := s.start(key, p)
		if err != nil {
			return fail(err)
		}
		return agent.Response{Pid: pid}, nil
	case agent.OpWait:
		<-p.exited
		return agent.Response{Pid: p.pid, Status: p.status, ExitedAt: p.exitedAt}, nil
	case agent.OpSignal:
		if err := s.signal(p, req); err != nil {
			return fail(err)
		}
		return agent.Response{}, nil
	case agent.OpResize:
		if p.pty == nil {
			return fail(fmt.Errorf("process %q has no terminal", req.ID))
		}
		if err := p.pty.Resize(console.WinSize{Width: req.Width, Height: req.Height}); err != nil {
			return fail(err)
		}
		return agent.Response{}, nil
	case agent.OpClose:
		p.closeStdin()
		return agent.Response{}, nil
	case agent.OpDelete:
		if err := s.delete(key, p); err != nil {
			return fail(err)
		}
		return agent.Response{}, nil
	}
	return fail(fmt.Errorf("unknown op %q", req.Op))
}

// network configures the guest's interface, once.
func (s *server) network(n *agent.Network) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case n == nil:
		return errors.New("network: no interface")
	case s.networked:
		return errors.New("network: configured already")
	}
	s.networked = true
	return setupNetwork(n)
}

func (s *server) get(key procKey) (*process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.procs[key]
	if !ok {
		return nil, fmt.Errorf("%w: %q of container %q", agent.ErrNotFound, key.exec, key.container)
	}
	return p, nil
}

// create prepares a process and its stdio; the init sets its
// container's root up.
func (s *server) create(req *agent.Request) error {
	spec := req.Process
	if spec == nil || len(spec.Args) == 0 {
		return errors.New("create: no process arguments")
	}
	if err := agent.CheckID(req.ContainerID); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	key := procKey{req.ContainerID, req.ID}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.procs[key]; ok {
		return fmt.Errorf("create: process %q of container %q exists", req.ID, req.ContainerID)
	}
	if len(s.procs) >= maxProcesses {
		return fmt.Errorf("create: %d processes already", maxProcesses)
	}
	root, ok := s.containers[req.ContainerID]
	switch {
	case req.ID == "" && ok:
		return fmt.Errorf("create: container %q exists", req.ContainerID)
	case req.ID == "":
		if req.Container == nil {
			return errors.New("create: the init needs its container")
		}
		var err error
		if root, err = setupRoot(req.ContainerID, req.Container, s.log); err != nil {
			return err
		}
		s.containers[req.ContainerID] = root
	case !ok:
		return fmt.Errorf("create: an exec before the init of container %q", req.ContainerID)
	}
	p := &process{spec: *spec, root: root, exited: make(chan struct{})}
	if err := p.openStdio(); err != nil {
		return err
	}
	s.procs[key] = p
	return nil
}

// openStdio makes the process's stdio: a terminal, or a pipe per stream
// the shim attaches and /dev/null for the others.
func (p *process) openStdio() error {
	if p.spec.Terminal {
		pty, slave, err := console.NewPty()
		if err != nil {
			return fmt.Errorf("a terminal: %w", err)
		}
		f, err := os.OpenFile(slave, os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			pty.Close()
			return fmt.Errorf("a terminal: %w", err)
		}
		p.pty, p.stdin, p.stdout = pty, pty, pty
		p.child = []*os.File{f, f, f}
		return nil
	}
	null := func() (*os.File, error) { return os.OpenFile(os.DevNull, os.O_RDWR, 0) }
	for i, want := range []bool{p.spec.Stdin, p.spec.Stdout, p.spec.Stderr} {
		if !want {
			f, err := null()
			if err != nil {
				p.closeAll()
				return err
			}
			p.child = append(p.child, f)
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			p.closeAll()
			return err
		}
		switch i {
		case 0:
			p.stdin = w
			p.child = append(p.child, r)
		case 1:
			p.stdout = r
			p.child = append(p.child, w)
		case 2:
			p.stderr = r
			p.child = append(p.child, w)
		}
	}
	return nil
}

func (p *process) closeChild() {
	for _, f := range p.child {
		f.Close()
	}
	p.child = nil
}

func (p *process) closeStdin() {
	p.closeIn.Do(func() {
		if p.stdin != nil && p.pty == nil {
			p.stdin.Close()
		}
	})
}

func (p *process) closeAll() {
	p.closeChild()
	p.closeStdin()
	for _, c := range []io.Closer{p.stdout, p.stderr} {
		if c != nil {
			c.Close()
		}
	}
}

// start runs the process in the container's root.
func (s *server) start(key procKey, p *process) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.startOnce {
		return 0, fmt.Errorf("process %q of container %q was started already", key.exec, key.container)
	}
	path, err := lookPath(p.root, p.spec.Args[0], p.spec.Env)
	if err != nil {
		return 0, err
	}
	attr := &os.ProcAttr{
		Dir:   p.spec.Cwd,
		Env:   p.spec.Env,
		Files: p.child,
		Sys: &syscall.SysProcAttr{
			Chroot:     p.root,
			Credential: &syscall.Credential{Uid: p.spec.UID, Gid: p.spec.GID, Groups: p.spec.AdditionalGIDs},
			Setsid:     true,
			Setctty:    p.spec.Terminal,
		},
	}
	proc, err := os.StartProcess(path, p.spec.Args, attr)
	if err != nil {
		return 0, fmt.Errorf("starting %s: %w", p.spec.Args[0], err)
	}
	p.startOnce = true
	p.pid = proc.Pid
	p.closeChild()
	for _, l := range p.spec.Rlimits {
		lim := unix.Rlimit{Cur: l.Soft, Max: l.Hard}
		if err := unix.Prlimit(p.pid, l.Resource, &lim, nil); err != nil {
			s.log.Warn("an rlimit not set", "resource", l.Resource, "err", err)
		}
	}
	return p.pid, nil
}

// lookPath finds name as the container sees it: through the process's
// PATH, in the container's root.
func lookPath(root, name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		f := filepath.Join(dir, name)
		if st, err := os.Stat(filepath.Join(root, f)); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return f, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
}

func (s *server) signal(p *process, req *agent.Request) error {
	s.mu.Lock()
	pid, started := p.pid, p.startOnce
	s.mu.Unlock()
	if !started {
		return errors.New("the process was not started")
	}
	select {
	case <-p.exited:
		if !req.All {
			return fmt.Errorf("%w: process %q has exited", agent.ErrNotFound, req.ID)
		}
	default:
	}
	sig := unix.Signal(req.Signal)
	if req.All {
		return signalRoot(p.root, sig)
	}
	return unix.Kill(pid, sig)
}

// signalRoot signals every process whose root is root: a container's,
// which the guest tells apart by their chroot as a PID namespace would
// by its pids.
func signalRoot(root string, sig unix.Signal) error {
	pids, err := rootPids(root)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, sig); err != nil && err != unix.ESRCH {
			return err
		}
	}
	return nil
}

// delete forgets an exited process; the init's delete ends its
// container: its execs are forgotten and its root is unmounted.
func (s *server) delete(key procKey, p *process) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.startOnce {
		select {
		case <-p.exited:
		default:
			return fmt.Errorf("process %q of container %q is running", key.exec, key.container)
		}
	}
	p.release()
	delete(s.procs, key)
	if key.exec != "" {
		return nil
	}
	for k, q := range s.procs {
		if k.container == key.container {
			q.release()
			delete(s.procs, k)
		}
	}
	root := s.containers[key.container]
	delete(s.containers, key.container)
	// What the init left running died with it; what escaped the kill
	// (a process forked meanwhile) goes now, so the root can go.
	_ = signalRoot(root, unix.SIGKILL)
	return teardownRoot(root)
}

// release closes what the agent holds of p.
func (p *process) release() {
	p.closeAll()
	if p.pty != nil {
		p.pty.Close()
	}
}

// reap waits for every child: those of the container are PID 1's too
// once their parent died. The container's own processes get their
// status; the others are only reaped.
func (s *server) reap() {
	ch := make(chan os.Signal, 32)
	signal.Notify(ch, unix.SIGCHLD)
	for range ch {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil || pid <= 0 {
				break
			}
			status := ws.ExitStatus()
			if ws.Signaled() {
				status = 128 + int(ws.Signal())
			}
			s.exited(pid, status)
		}
	}
}

func (s *server) exited(pid, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, p := range s.procs {
		if p.startOnce && p.pid == pid {
			select {
			case <-p.exited:
			default:
				p.status, p.exitedAt = status, time.Now()
				close(p.exited)
			}
			if key.exec == "" {
				// The container ends with its init, as a PID namespace
				// does: what it left running dies.
				if err := signalRoot(p.root, unix.SIGKILL); err != nil {
					s.log.Warn("ending a container's processes", "container", key.container, "err", err)
				}
			}
			return
		}
	}
}

// containerPids lists the processes of container id.
func (s *server) containerPids(id string) ([]int, error) {
	s.mu.Lock()
	root, ok := s.containers[id]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: container %q", agent.ErrNotFound, id)
	}
	return rootPids(root)
}

// rootPids lists the processes whose root is root.
func rootPids(root string) ([]int, error) {
	pids, err := guestPids()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, pid := range pids {
		if r, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/root"); err == nil && r == root {
			out = append(out, pid)
		}
	}
	return out, nil
}

// guestPids lists the guest's processes but the agent and the kernel's.
func guestPids() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // it ended meanwhile
		}
		// The fields after the command's name, which may hold spaces.
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 2 || f[1] == "0" || f[1] == "2" {
			continue // kthreadd and its kernel threads
		}
		pids = append(pids, pid)
	}
	return pids, nil
}
