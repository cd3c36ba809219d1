package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

var empty = &ptypes.Empty{}

// service is the task API of one VM: its container, or a pod sandbox
// and the pod's containers, each with its init and execs.
type service struct {
	publisher shim.Publisher
	shutdown  shutdown.Service
	events    chan any // published in order by forward
	log       *slog.Logger

	mu sync.Mutex
	// first is the container whose Create booted the VM (the pod
	// sandbox's), whose Delete ends it.
	first      string
	share      string // the host folder the VM shares: a root per container
	sb         *sandbox
	mounter    *mounter // a pod sandbox's: its later containers' roots
	net        *podNetwork
	containers map[string]*container
	paused     bool
	// booted is set by the first Create to boot a VM: a shim boots one.
	// A failed boot leaves the shim under its seccomp filter, which
	// forbids mounting another root file system.
	booted bool
}

// container is one container of the VM.
type container struct {
	id, bundle string
	procs      map[string]*proc // "" is the init
}

func newService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service) *service {
	s := &service{
		publisher:  publisher,
		shutdown:   sd,
		events:     make(chan any, 128),
		log:        slog.New(slog.NewTextHandler(log.G(ctx).Logger.Out, nil)),
		containers: map[string]*container{},
	}
	go s.forward(ctx)
	sd.RegisterCallback(func(context.Context) error {
		close(s.events)
		return nil
	})
	return s
}

// RegisterTTRPC serves the task API.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	return nil
}

// forward publishes the events in the order they were sent.
func (s *service) forward(ctx context.Context) {
	ns, _ := namespaces.Namespace(ctx)
	ctx = namespaces.WithNamespace(context.Background(), ns)
	for e := range s.events {
		if err := s.publisher.Publish(ctx, topic(e), e); err != nil {
			log.G(ctx).WithError(err).Error("publishing an event")
		}
	}
	s.publisher.Close()
}

func topic(e any) string {
	switch e.(type) {
	case *eventstypes.TaskCreate:
		return runtime.TaskCreateEventTopic
	case *eventstypes.TaskStart:
		return runtime.TaskStartEventTopic
	case *eventstypes.TaskExit:
		return runtime.TaskExitEventTopic
	case *eventstypes.TaskDelete:
		return runtime.TaskDeleteEventTopic
	case *eventstypes.TaskExecAdded:
		return runtime.TaskExecAddedEventTopic
	case *eventstypes.TaskExecStarted:
		return runtime.TaskExecStartedEventTopic
	case *eventstypes.TaskPaused:
		return runtime.TaskPausedEventTopic
	case *eventstypes.TaskResumed:
		return runtime.TaskResumedEventTopic
	}
	return runtime.TaskUnknownTopic
}

// send queues an event; callers hold s.mu, which orders them.
func (s *service) send(e any) { s.events <- e }

// Create boots the VM and prepares the container's init process, or,
// for a later container of the VM's pod, mounts its root file system in
// the VM's share and prepares its init there.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sb == nil && s.booted {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "this shim's VM failed to start; a new task needs a new shim")
	}
	if r.Checkpoint != "" {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "%s restores no checkpoint", runtimeName)
	}
	if err := agent.CheckID(r.ID); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	if _, ok := s.containers[r.ID]; ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "container %s", r.ID)
	}
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	p, c, vm, err := fromSpec(spec, s.log)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	var mounts []mount.Mount
	for _, m := range r.Rootfs {
		mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Options: m.Options})
	}
	if s.sb != nil {
		if err := s.addToPod(ctx, r, vm, mounts, p, c); err != nil {
			return nil, err
		}
	} else if err := s.boot(ctx, r, vm, mounts, p, c); err != nil {
		return nil, err
	}
	s.send(&eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs,
		IO:  &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid: uint32(os.Getpid()),
	})
	return &taskAPI.CreateTaskResponse{Pid: uint32(os.Getpid())}, nil
}

// boot mounts the first container's root file system in the VM's share,
// boots the VM and prepares the container's init. A pod sandbox's VM
// gets the mounter for its later containers, started before the shim's
// seccomp filter.
func (s *service) boot(ctx context.Context, r *taskAPI.CreateTaskRequest, vm vmSpec, mounts []mount.Mount, p *agent.Process, c *agent.Container) (retErr error) {
	cfg, err := loadConfig(r.Options)
	if err != nil {
		return errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	share := shareDir(r.Bundle)
	root := filepath.Join(share, r.ID)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	if err := mount.All(mounts, root); err != nil {
		return fmt.Errorf("mounting the root file system: %w", err)
	}
	defer func() {
		if retErr != nil {
			if err := removeShare(share, 0); err != nil {
				s.log.Warn("unmounting the root file system", "err", err)
			}
		}
	}()
	if vm.podSandbox {
		if s.mounter, err = startMounter(share); err != nil {
			return err
		}
		defer func() {
			if retErr != nil {
				s.mounter.close()
				s.mounter = nil
			}
		}()
	}
	if vm.netns != "" {
		if vm.net, err = openNetwork(vm.netns); err != nil {
			return err
		}
		defer func() {
			if retErr != nil {
				if err := vm.net.close(); err != nil {
					s.log.Warn("the pod's network", "err", err)
				}
			}
		}()
	}
	if _, err := os.Stat(filepath.Join(r.Bundle, cgroupFile)); vm.cgroup != "" && err != nil {
		s.log.Warn("the shim stays in containerd's cgroup: not the spec's", "cgroupsPath", vm.cgroup, "why", errNoUnifiedCgroups)
	}
	vm.bundle, vm.share = r.Bundle, share
	s.booted = true
	sb, err := startSandbox(ctx, cfg, vm, s.log)
	if err != nil {
		return err
	}
	ct := &container{id: r.ID, bundle: r.Bundle, procs: map[string]*proc{}}
	if err := s.createInit(ctx, sb, ct, r, p, c); err != nil {
		sb.stop()
		return err
	}
	s.first, s.share, s.sb, s.net = r.ID, share, sb, vm.net
	s.containers[r.ID] = ct
	go s.watchVM()
	return nil
}

// addToPod runs container r.ID in the pod sandbox's VM.
func (s *service) addToPod(ctx context.Context, r *taskAPI.CreateTaskRequest, vm vmSpec, mounts []mount.Mount, p *agent.Process, c *agent.Container) (retErr error) {
	if s.mounter == nil || vm.sandboxID != s.first {
		return errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "this shim runs container %s, not a pod sandbox of container %s", s.first, r.ID)
	}
	if vm.memory > 0 || vm.cpus > 0 {
		s.log.Info("a pod's container runs in the VM its sandbox sized", "container", r.ID)
	}
	if err := s.mounter.mount(r.ID, mounts); err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			if err := s.mounter.unmount(r.ID); err != nil {
				s.log.Warn("unmounting the root file system", "container", r.ID, "err", err)
			}
		}
	}()
	ct := &container{id: r.ID, bundle: r.Bundle, procs: map[string]*proc{}}
	if err := s.createInit(ctx, s.sb, ct, r, p, c); err != nil {
		return err
	}
	s.containers[r.ID] = ct
	return nil
}

// createInit prepares container ct's init in the guest.
func (s *service) createInit(ctx context.Context, sb *sandbox, ct *container, r *taskAPI.CreateTaskRequest, p *agent.Process, c *agent.Container) error {
	init := newProc(r.ID, "", r.Stdin, r.Stdout, r.Stderr, r.Terminal)
	p.Stdin, p.Stdout, p.Stderr = r.Stdin != "", r.Stdout != "", r.Stderr != "" && !r.Terminal
	if err := init.create(ctx, sb, p, c); err != nil {
		return err
	}
	ct.procs[""] = init
	return nil
}

// watchVM ends every process when the VM ends on its own: a guest that
// panicked, powered off, or a VMM fault.
func (s *service) watchVM() {
	<-s.sb.ended
	if s.sb.err != nil {
		s.log.Error("the container's VM failed", "err", s.sb.err, "console", s.sb.console.String())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ct := range s.containers {
		for _, p := range ct.procs {
			s.exited(p, 128+int(unix.SIGKILL), time.Now())
		}
	}
}

func readSpec(bundle string) (*specs.Spec, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "the bundle's config.json: %v", err)
	}
	return &spec, nil
}

func (s *service) get(id, execID string) (*proc, error) {
	ct, ok := s.containers[id]
	if !ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "container %s: not created", id)
	}
	p, ok := ct.procs[execID]
	if !ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "process %s of container %s", execID, id)
	}
	return p, nil
}

// Start starts the init or an exec.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if s.paused {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s is paused", r.ID)
	}
	if err := p.start(ctx, s.sb); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	pid := uint32(os.Getpid())
	if r.ExecID == "" {
		s.send(&eventstypes.TaskStart{ContainerID: r.ID, Pid: pid})
	} else {
		s.send(&eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: pid})
	}
	go s.wait(p)
	return &taskAPI.StartResponse{Pid: pid}, nil
}

// wait waits for p's exit in the guest and for its output's end, then
// records it and sends TaskExit.
func (s *service) wait(p *proc) {
	resp, err := s.sb.call(context.Background(), agent.Request{Op: agent.OpWait, ContainerID: p.containerID, ID: p.execID})
	status, at := 128+int(unix.SIGKILL), time.Now()
	if err == nil {
		status, at = resp.Status, resp.ExitedAt
	} else {
		s.log.Warn("waiting for a process", "exec", p.execID, "err", err)
	}
	p.waitOutput()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exited(p, status, at)
}

// exited records p's exit once; callers hold s.mu.
func (s *service) exited(p *proc, status int, at time.Time) {
	if !p.setExited(status, at) {
		return
	}
	s.send(&eventstypes.TaskExit{
		ContainerID: p.containerID, ID: p.taskID(p.containerID), Pid: uint32(os.Getpid()),
		ExitStatus: uint32(status), ExitedAt: protobuf.ToTimestamp(at),
	})
}

// Delete deletes an exec, or a container: a pod's container ends in the
// guest and its root file system is unmounted; the first container's
// (the pod sandbox's) Delete ends the VM and every container.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if p.state() == task.Status_RUNNING || p.state() == task.Status_PAUSED {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "process %s is running", p.taskID(r.ID))
	}
	st, at := p.exit()
	ct := s.containers[r.ID]
	switch {
	case r.ExecID != "":
		if _, err := s.sb.call(ctx, agent.Request{Op: agent.OpDelete, ContainerID: r.ID, ID: r.ExecID}); err != nil && !errors.Is(err, agent.ErrNotFound) {
			s.log.Warn("deleting an exec in the guest", "exec", r.ExecID, "err", err)
		}
		p.closeIO()
		delete(ct.procs, r.ExecID)
	case r.ID != s.first:
		if err := s.deleteFromPod(ctx, ct); err != nil {
			return nil, err
		}
	default:
		// The other containers and the execs still running end with the
		// VM: their exits go out now, and the others' TaskDelete, before
		// this TaskDelete.
		for _, o := range s.containers {
			for _, q := range o.procs {
				s.exited(q, 128+int(unix.SIGKILL), time.Now())
				q.closeIO()
			}
		}
		s.sb.stop()
		if s.mounter != nil {
			s.mounter.close()
			s.mounter = nil
		}
		if s.net != nil {
			if err := s.net.close(); err != nil {
				s.log.Warn("the pod's network", "err", err)
			}
		}
		if err := removeCgroup(ct.bundle, true); err != nil {
			s.log.Warn("removing the shim's cgroup", "err", err)
		}
		// The VM has ended: nothing holds the roots any more.
		if err := removeShare(s.share, 0); err != nil {
			return nil, fmt.Errorf("unmounting the root file systems: %w", err)
		}
		if err := os.RemoveAll(filepath.Join(ct.bundle, workDir)); err != nil {
			s.log.Warn("removing the shim's files", "err", err)
		}
		for id, o := range s.containers {
			if id != r.ID {
				ost, oat := o.procs[""].exit()
				s.send(&eventstypes.TaskDelete{ContainerID: id, Pid: uint32(os.Getpid()),
					ExitStatus: uint32(ost), ExitedAt: protobuf.ToTimestamp(oat)})
			}
		}
		s.containers = map[string]*container{}
	}
	if r.ExecID == "" {
		s.send(&eventstypes.TaskDelete{ContainerID: r.ID, Pid: uint32(os.Getpid()),
			ExitStatus: uint32(st), ExitedAt: protobuf.ToTimestamp(at)})
	}
	return &taskAPI.DeleteResponse{Pid: uint32(os.Getpid()), ExitStatus: uint32(st), ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// deleteFromPod ends a pod's container in the guest (its execs, its
// root's mounts) and unmounts its root file system.
func (s *service) deleteFromPod(ctx context.Context, ct *container) error {
	for _, q := range ct.procs {
		s.exited(q, 128+int(unix.SIGKILL), time.Now())
		q.closeIO()
	}
	if _, err := s.sb.call(ctx, agent.Request{Op: agent.OpDelete, ContainerID: ct.id}); err != nil && !errors.Is(err, agent.ErrNotFound) {
		return fmt.Errorf("ending container %s in the guest: %w", ct.id, err)
	}
	if err := s.mounter.unmount(ct.id); err != nil {
		return fmt.Errorf("unmounting the root file system of container %s: %w", ct.id, err)
	}
	delete(s.containers, ct.id)
	return nil
}

// Exec prepares an additional process in the container.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	init, err := s.get(r.ID, "")
	if err != nil {
		return nil, err
	}
	ct := s.containers[r.ID]
	if _, ok := ct.procs[r.ExecID]; ok || r.ExecID == "" {
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "exec %q", r.ExecID)
	}
	if init.state() != task.Status_RUNNING {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s is not running", r.ID)
	}
	if r.Spec == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: no process", r.ExecID)
	}
	var ps specs.Process
	if err := json.Unmarshal(r.Spec.Value, &ps); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: %v", r.ExecID, err)
	}
	ap, err := fromProcess(&ps)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: %v", r.ExecID, err)
	}
	ap.Stdin, ap.Stdout, ap.Stderr = r.Stdin != "", r.Stdout != "", r.Stderr != "" && !r.Terminal
	p := newProc(r.ID, r.ExecID, r.Stdin, r.Stdout, r.Stderr, r.Terminal)
	if err := p.create(ctx, s.sb, ap, nil); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	ct.procs[r.ExecID] = p
	s.send(&eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

// ResizePty sets a process's terminal size.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.get(r.ID, r.ExecID); err != nil {
		return nil, err
	}
	if r.Width > 0xffff || r.Height > 0xffff {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "a terminal of %dx%d", r.Width, r.Height)
	}
	if _, err := s.sb.call(ctx, agent.Request{Op: agent.OpResize, ContainerID: r.ID, ID: r.ExecID, Width: uint16(r.Width), Height: uint16(r.Height)}); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return empty, nil
}

// State reports a process's state.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st := p.state()
	if s.paused && st == task.Status_RUNNING {
		st = task.Status_PAUSED
	}
	code, at := p.exit()
	return &taskAPI.StateResponse{
		ID: p.taskID(r.ID), Bundle: s.containers[r.ID].bundle, Pid: uint32(os.Getpid()), Status: st,
		Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, Terminal: p.terminal,
		ExitStatus: uint32(code), ExitedAt: protobuf.ToTimestamp(at), ExecID: r.ExecID,
	}, nil
}

// Pause freezes the whole VM: its vCPUs stop. In a pod, that is the
// sandbox's pause; its other containers cannot pause alone.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.get(r.ID, ""); err != nil {
		return nil, err
	}
	if r.ID != s.first {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "container %s shares its pod's VM: pause the pod sandbox %s", r.ID, s.first)
	}
	if err := s.sb.m.Pause(); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%v", err)
	}
	s.paused = true
	s.send(&eventstypes.TaskPaused{ContainerID: r.ID})
	return empty, nil
}

// Resume lets the VM run again.
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.get(r.ID, ""); err != nil {
		return nil, err
	}
	if r.ID != s.first {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "container %s shares its pod's VM: resume the pod sandbox %s", r.ID, s.first)
	}
	if err := s.sb.m.Resume(); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%v", err)
	}
	s.paused = false
	s.send(&eventstypes.TaskResumed{ContainerID: r.ID})
	return empty, nil
}

// Kill signals a process, or with All every process of the container.
// SIGKILL to the init of a paused container ends its VM, as a frozen
// cgroup's processes die of it.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	p, err := s.get(r.ID, r.ExecID)
	paused, first := s.paused, s.first
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if p.state() == task.Status_STOPPED {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "process %s has exited", p.taskID(r.ID))
	}
	if p.state() == task.Status_CREATED && r.ExecID == "" && r.Signal == uint32(unix.SIGKILL) {
		if r.ID != first {
			// A pod's container that never ran ends alone.
			s.mu.Lock()
			s.exited(p, 128+int(unix.SIGKILL), time.Now())
			s.mu.Unlock()
			return empty, nil
		}
		s.sb.stop() // a created container that never ran: its VM ends
		return empty, nil
	}
	if paused && r.ExecID == "" && r.ID == first && r.Signal == uint32(unix.SIGKILL) {
		s.sb.stop()
		return empty, nil
	}
	if paused {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s is paused: only SIGKILL reaches it", r.ID)
	}
	_, err = s.sb.call(ctx, agent.Request{Op: agent.OpSignal, ContainerID: r.ID, ID: r.ExecID, Signal: int(r.Signal), All: r.All})
	if errors.Is(err, agent.ErrNotFound) {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "%v", err)
	}
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return empty, nil
}

// Pids lists the container's processes: the guest's, by guest pid.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	s.mu.Lock()
	_, err := s.get(r.ID, "")
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	resp, err := s.sb.call(ctx, agent.Request{Op: agent.OpPids, ContainerID: r.ID})
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	var out []*task.ProcessInfo
	for _, pid := range resp.Pids {
		out = append(out, &task.ProcessInfo{Pid: uint32(pid)})
	}
	return &taskAPI.PidsResponse{Processes: out}, nil
}

// CloseIO closes a process's stdin.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	p, err := s.get(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if r.Stdin {
		p.closeStdin()
	}
	return empty, nil
}

// Checkpoint is not supported: a VM's state is not a CRIU image.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "%s: checkpoint", runtimeName)
}

// Update is not supported: the VM's size is fixed at its start.
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "%s: update of a running container's resources", runtimeName)
}

// Wait waits for a process's exit.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	s.mu.Lock()
	p, err := s.get(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exitedCh:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	code, at := p.exit()
	return &taskAPI.WaitResponse{ExitStatus: uint32(code), ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Stats are the guest's, as cgroup v2 metrics: memory in use and
// available, CPU time, processes.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	s.mu.Lock()
	_, err := s.get(r.ID, "")
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	resp, err := s.sb.call(ctx, agent.Request{Op: agent.OpStats})
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	st := resp.Stats
	if st == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "the agent sent no stats")
	}
	m := &stats.Metrics{
		Pids:   &stats.PidsStat{Current: st.Processes},
		CPU:    &stats.CPUStat{UsageUsec: st.CPUUsec},
		Memory: &stats.MemoryStat{Usage: st.MemTotal - min(st.MemAvailable, st.MemTotal), UsageLimit: st.MemTotal},
	}
	data, err := typeurl.MarshalAny(m)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: protobuf.FromAny(data)}, nil
}

// Connect returns the shim's pid, which is the VMM's.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: uint32(os.Getpid())}, nil
}

// Shutdown ends the shim once its containers are deleted.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.containers) > 0 {
		return empty, nil
	}
	s.shutdown.Shutdown()
	return empty, nil
}
