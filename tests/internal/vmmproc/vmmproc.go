// Package vmmproc runs a VMM (`gvmm run`) as a test's child process: its
// console and stderr recorded, ended when the test ends, and both logged
// when the test failed, with what a VMM still running then was doing.
package vmmproc

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/vmmdiag"
)

// Proc is a running VMM.
type Proc struct {
	Cmd *exec.Cmd
	// Out is the guest's console (the VMM's stdout), Err the VMM's logs.
	Out, Err *guest.Recorder
	// Exited is closed once the process ended.
	Exited <-chan struct{}
	cancel context.CancelFunc
}

// Start runs bin with args, killed after limit at the latest.
func Start(t *testing.T, limit time.Duration, bin string, args ...string) *Proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	p := &Proc{Out: &guest.Recorder{}, Err: &guest.Recorder{}, cancel: cancel}
	p.Cmd = exec.CommandContext(ctx, bin, args...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Err
	// The console's copy goroutines end with the process, not with
	// whatever child kept a pipe open.
	p.Cmd.WaitDelay = 5 * time.Second
	if err := p.Cmd.Start(); err != nil {
		cancel()
		require.NoError(t, err)
	}
	exited := make(chan struct{})
	p.Exited = exited
	go func() { _ = p.Cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			p.describe(t)
		}
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("console:\n%s\ngvmm stderr:\n%s", p.Out.String(), p.Err.String())
		}
	})
	return p
}

// describe tells what became of the VMM of a failed test. One that
// outlived it: what its threads and KVM did over two seconds, then,
// through SIGQUIT, every goroutine's stack on its stderr (the Go
// runtime's dump). One that had ended: how (an exit status or a signal),
// and the kernel's last words (the OOM killer's, say). A stall that comes
// once in many runs leaves where the VMM waited, or how it died.
func (p *Proc) describe(t *testing.T) {
	select {
	case <-p.Exited:
		t.Logf("the VMM had ended: %s; the kernel's log ends:\n%s", p.Cmd.ProcessState, vmmdiag.KernelLog(20))
		return
	default:
	}
	t.Log(vmmdiag.Snapshot(p.Cmd.Process.Pid, 2*time.Second))
	if err := p.Cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Logf("SIGQUIT to the VMM: %v", err)
		return
	}
	select {
	case <-p.Exited:
	case <-time.After(5 * time.Second):
		t.Log("the VMM did not end within 5 s of SIGQUIT")
	}
}

// WaitForLink waits for the network interface name (a TAP the VMM
// creates), failing if the VMM ends first.
func (p *Proc) WaitForLink(t *testing.T, name string, timeout time.Duration) netlink.Link {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		link, err := netlink.LinkByName(name)
		if err == nil {
			return link
		}
		select {
		case <-p.Exited:
			t.Fatalf("the VMM ended before it created %s\n%s", name, p.Err.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "the VMM did not create %s in %s: %v", name, timeout, err)
	}
}

// Kill ends the process at once and waits for it.
func (p *Proc) Kill() {
	p.cancel()
	<-p.Exited
}

// WaitFor waits up to timeout for the guest's report key and returns its
// first value, failing on a guest error or the VMM's end.
func (p *Proc) WaitFor(t *testing.T, key string, timeout time.Duration) string {
	t.Helper()
	return WaitFor(t, p.Out, key, timeout, p.Exited)
}

// WaitFor waits up to timeout for the report key on the console out and
// returns its first value, failing on a guest error or once exited is
// closed (a machine of the library's as well as a process).
func WaitFor(t *testing.T, out *guest.Recorder, key string, timeout time.Duration, exited <-chan struct{}) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !out.Has(key) {
		select {
		case <-exited:
			t.Fatalf("the VM ended before the guest reported %s\n%s", key, out.String())
		default:
		}
		require.Empty(t, out.Values("error"), "the guest reported errors\n%s", out.String())
		require.True(t, time.Now().Before(deadline), "no %s from the guest in %s\n%s", key, timeout, out.String())
		time.Sleep(50 * time.Millisecond)
	}
	require.Empty(t, out.Values("error"), "the guest reported errors\n%s", out.String())
	return out.Values(key)[0]
}
