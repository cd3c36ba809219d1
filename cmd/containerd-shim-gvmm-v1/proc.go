package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/fifo"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

// outputGrace is how long an exit waits for its output's end, which a
// process left running in the background can hold open.
const outputGrace = 5 * time.Second

// proc is the shim's side of a process of the container.
type proc struct {
	containerID, execID   string
	stdin, stdout, stderr string // containerd's FIFOs
	terminal              bool
	stdinConn             net.Conn
	stdinOnce             sync.Once
	conns                 []io.Closer
	output                sync.WaitGroup
	mu                    sync.Mutex
	status                task.Status
	exitStatus            int
	exitedAt              time.Time
	exitedCh              chan struct{}
}

func newProc(containerID, execID, stdin, stdout, stderr string, terminal bool) *proc {
	return &proc{containerID: containerID, execID: execID, stdin: stdin, stdout: stdout, stderr: stderr,
		terminal: terminal, status: task.Status_CREATED, exitedCh: make(chan struct{})}
}

// taskID is the process's id in events: the container's for the init.
func (p *proc) taskID(containerID string) string {
	if p.execID == "" {
		return containerID
	}
	return p.execID
}

// create prepares the process in the guest and attaches its stdio to
// containerd's FIFOs, before it starts, so that no output is lost.
func (p *proc) create(ctx context.Context, sb *sandbox, ap *agent.Process, c *agent.Container) error {
	if _, err := sb.call(ctx, agent.Request{Op: agent.OpCreate, ContainerID: p.containerID, ID: p.execID, Process: ap, Container: c}); err != nil {
		return err
	}
	if p.stdin != "" {
		conn, err := sb.dial(ctx, agent.Request{Op: agent.OpStdin, ContainerID: p.containerID, ID: p.execID})
		if err != nil {
			return err
		}
		in, err := fifo.OpenFifo(ctx, p.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			conn.Close()
			return fmt.Errorf("stdin: %w", err)
		}
		p.stdinConn = conn
		p.conns = append(p.conns, conn, in)
		go func() {
			_, _ = io.Copy(conn, in)
			p.closeStdin()
		}()
	}
	for _, o := range []struct{ op, path string }{{agent.OpStdout, p.stdout}, {agent.OpStderr, p.stderr}} {
		if o.path == "" || (o.op == agent.OpStderr && p.terminal) {
			continue
		}
		conn, err := sb.dial(ctx, agent.Request{Op: o.op, ContainerID: p.containerID, ID: p.execID})
		if err != nil {
			p.closeIO()
			return err
		}
		p.conns = append(p.conns, conn)
		p.output.Add(1)
		go func(path string) {
			defer p.output.Done()
			defer conn.Close()
			// containerd holds the FIFO's reading end already; the open
			// completes at once.
			out, err := fifo.OpenFifo(context.Background(), path, syscall.O_WRONLY, 0)
			if err != nil {
				return
			}
			defer out.Close()
			_, _ = io.Copy(out, conn)
		}(o.path)
	}
	return nil
}

// start starts the process in the guest.
func (p *proc) start(ctx context.Context, sb *sandbox) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != task.Status_CREATED {
		return fmt.Errorf("process %s: started already", p.taskID(p.containerID))
	}
	if _, err := sb.call(ctx, agent.Request{Op: agent.OpStart, ContainerID: p.containerID, ID: p.execID}); err != nil {
		return err
	}
	p.status = task.Status_RUNNING
	return nil
}

// waitOutput waits, for a while, for the process's output to end.
func (p *proc) waitOutput() {
	done := make(chan struct{})
	go func() {
		p.output.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(outputGrace):
	}
}

// setExited records the exit; false if it was recorded already.
func (p *proc) setExited(status int, at time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == task.Status_STOPPED {
		return false
	}
	p.status, p.exitStatus, p.exitedAt = task.Status_STOPPED, status, at
	close(p.exitedCh)
	return true
}

func (p *proc) state() task.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

func (p *proc) exit() (int, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitStatus, p.exitedAt
}

// closeStdin ends the process's stdin in the guest.
func (p *proc) closeStdin() {
	p.stdinOnce.Do(func() {
		if cw, ok := p.stdinConn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	})
}

// closeIO drops the process's stdio.
func (p *proc) closeIO() {
	for _, c := range p.conns {
		c.Close()
	}
}
