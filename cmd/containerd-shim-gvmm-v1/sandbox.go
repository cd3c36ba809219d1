package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/gvmm-dev/gvmm/internal/agent"
	"github.com/gvmm-dev/gvmm/internal/guestimage"
	"github.com/gvmm-dev/gvmm/internal/kmod"
	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/seccomp"
	"github.com/gvmm-dev/gvmm/virtio/vsock"
)

// guestModules are what the agent needs: the PCI transport, the 9p
// client for the root file system, vsock for the shim.
var guestModules = []string{"virtio_pci", "9pnet_virtio", "9p", "vmw_vsock_virtio_transport"}

// cmdline: a panic ends the VM at once; quiet keeps the console short.
const cmdline = "console=ttyS0 reboot=k panic=-1 quiet"

// consoleTail is how much of the guest's console the shim keeps to
// explain a guest that failed.
const consoleTail = 16 << 10

// sandbox is the container's VM and its agent.
type sandbox struct {
	m       *machine.Machine
	console *tail
	ended   chan struct{} // closed when the VM has ended
	err     error         // why, once ended
}

// vmSpec is what the VM gets beyond the shim's settings.
type vmSpec struct {
	bundle   string
	share    string // the folder of the containers' roots
	readonly bool   // the share
	memory   uint64 // 0: the settings'
	cpus     int
	// podSandbox: the VM will run the pod's other containers too.
	podSandbox bool
	// sandboxID: a pod's container, to run in this sandbox's VM.
	sandboxID string
	// netns is the network namespace the spec joins; net is its network
	// once opened, the VM's network device.
	netns string
	net   *podNetwork
	// cgroup is the spec's cgroup, which shim start put the shim in.
	cgroup string
}

// startSandbox boots the VM and waits for its agent.
func startSandbox(ctx context.Context, cfg settings, spec vmSpec, log *slog.Logger) (_ *sandbox, err error) {
	if err := guestimage.CheckStatic(cfg.agent); err != nil {
		return nil, fmt.Errorf("the agent: %w", err)
	}
	want := guestModules
	if spec.net != nil {
		want = append(slices.Clone(want), "virtio_net")
	}
	mods, err := kmod.Resolve(cfg.modules, want...)
	if err != nil {
		return nil, fmt.Errorf("the guest's modules: %w", err)
	}
	work := filepath.Join(spec.bundle, workDir)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, err
	}
	initrd := filepath.Join(work, "initrd.cpio")
	if err := guestimage.Write(initrd, cfg.agent, mods); err != nil {
		return nil, fmt.Errorf("the agent's initramfs: %w", err)
	}
	mem, cpus := cfg.memory, cfg.cpus
	if spec.memory > mem {
		mem = spec.memory
	}
	if spec.cpus > cpus {
		cpus = spec.cpus
	}
	s := &sandbox{console: &tail{max: consoleTail}, ended: make(chan struct{})}
	mc := machine.Config{
		Kernel: cfg.kernel, Initrd: initrd, Cmdline: cmdline, CPUs: cpus, Memory: mem,
		Console: s.console, Log: log,
		// The containers' roots keep their set-ID programs (sudo, su) and
		// may gain them (a package installed in a container): they live
		// in containerd's own folders, out of other users' reach.
		Shares: []machine.Share{{Path: spec.share, Tag: agent.ShareTag, ReadOnly: spec.readonly, SetID: true}},
		Vsock:  &machine.VsockConfig{CID: vsock.MinCID},
	}
	if spec.net != nil {
		// The machine takes the TAP over, closing it at its end.
		mc.Nets = []machine.Net{{File: spec.net.tap, MAC: spec.net.mac}}
	}
	s.m, err = machine.New(mc)
	if err != nil {
		if spec.net != nil {
			spec.net.tap.Close()
		}
		return nil, err
	}
	// The VM outlives the request that created it.
	if err := s.m.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, fmt.Errorf("starting the VM: %w", err)
	}
	go func() {
		s.err = s.m.Wait()
		close(s.ended)
	}()
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	if cfg.seccomp {
		// The VM runs and all the shim opens by itself is open; the
		// guest's agent is not yet listened to. From here on a call
		// outside the list ends the shim with a line naming it in its
		// log, and containerd sees the task end as with a killed shim.
		if err := seccomp.Install(seccomp.Shim()); err != nil {
			return nil, err
		}
	}
	if err := s.waitAgent(ctx, cfg.bootTimeout); err != nil {
		return nil, err
	}
	if spec.net != nil {
		if _, err := s.call(ctx, agent.Request{Op: agent.OpNetwork, Network: &spec.net.guest}); err != nil {
			return nil, fmt.Errorf("the guest's network: %w", err)
		}
	}
	return s, nil
}

// waitAgent polls the agent's port until it answers.
func (s *sandbox) waitAgent(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		c, err := s.m.DialVsock(ctx, agent.Port)
		if err == nil {
			c.Close()
			return nil
		}
		// Until the guest's driver runs, and then until the agent
		// listens, the dial fails: both are the guest still booting.
		if !errors.Is(err, vsock.ErrNotReady) && !errors.Is(err, vsock.ErrRefused) && ctx.Err() == nil {
			return fmt.Errorf("dialing the agent: %w", err)
		}
		select {
		case <-s.ended:
			return fmt.Errorf("the VM ended (%v) before its agent answered; its console ended with:\n%s", s.err, s.console)
		case <-ctx.Done():
			return fmt.Errorf("the agent did not answer within %s; the guest's console ended with:\n%s", timeout, s.console)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dial connects to the agent and sends req; the connection stays open
// for the response and, for a stdio op, its stream.
func (s *sandbox) dial(ctx context.Context, req agent.Request) (net.Conn, error) {
	c, err := s.m.DialVsock(ctx, agent.Port)
	if err != nil {
		return nil, fmt.Errorf("the agent: %w", err)
	}
	if err := agent.Write(c, req); err != nil {
		c.Close()
		return nil, fmt.Errorf("the agent: %w", err)
	}
	var resp agent.Response
	if err := s.read(ctx, c, &resp); err != nil {
		c.Close()
		return nil, err
	}
	if err := resp.Err(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// call sends req and returns the agent's response.
func (s *sandbox) call(ctx context.Context, req agent.Request) (*agent.Response, error) {
	c, err := s.m.DialVsock(ctx, agent.Port)
	if err != nil {
		return nil, fmt.Errorf("the agent: %w", err)
	}
	defer c.Close()
	if err := agent.Write(c, req); err != nil {
		return nil, fmt.Errorf("the agent: %w", err)
	}
	var resp agent.Response
	if err := s.read(ctx, c, &resp); err != nil {
		return nil, err
	}
	return &resp, resp.Err()
}

// read reads the response, giving up when ctx ends or the VM does.
func (s *sandbox) read(ctx context.Context, c net.Conn, resp *agent.Response) error {
	done := make(chan error, 1)
	go func() { done <- agent.Read(c, resp) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		c.Close()
		return ctx.Err()
	case <-s.ended:
		c.Close()
		return fmt.Errorf("the VM ended: %v", s.err)
	}
}

// stop ends the VM and waits for it.
func (s *sandbox) stop() {
	s.m.Stop()
	<-s.ended
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
