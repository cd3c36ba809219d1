package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/console"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/machine/api"
)

// Waits of the lifecycle commands.
const (
	pollInterval = 50 * time.Millisecond
	stopWait     = 10 * time.Second // for a VMM to end after /vm/stop, then after SIGKILL
	logTail      = 20               // lines of the VMM's log shown when it fails to start
)

func startCmd(c *vmCommand) func() int {
	timeout := c.fs.Duration("timeout", 2*time.Minute, "how long (`D`) to wait for the guest to start")
	return func() int {
		name := c.args[0]
		dir, l, err := c.lock(name)
		if err != nil {
			return c.fail(err)
		}
		defer l.Unlock()
		def, err := dir.Load(name)
		if err != nil {
			return c.fail(err)
		}
		st, err := c.status(dir, l)
		if err != nil {
			return c.fail(err)
		}
		if st.State == state.Running {
			return c.fail(fmt.Errorf("%s is already running (pid %d)", name, st.PID))
		}
		// The guard machine applies, said before the VMM is detached.
		if err := def.CheckHost(); err != nil {
			return c.fail(err)
		}
		if err := def.CheckFiles(); err != nil {
			return c.fail(err)
		}
		if h, err := hostUsage(dir, name, c.env.sysRoot); err != nil {
			c.warn("cannot measure the host's memory: %v", err)
		} else if _, memory := sizeOf(def); h.CommittedBytes+memory > h.MemoryBytes {
			c.warn("running VMs will be given %s, more than the host's %s (%.2f): guests may be swapped out or killed when they use it",
				humanSize(h.CommittedBytes+memory), humanSize(h.MemoryBytes), float64(h.CommittedBytes+memory)/float64(h.MemoryBytes))
		}
		p, err := l.Prepare()
		if err != nil {
			return c.fail(err)
		}
		extra, err := confineStart(def, p)
		if err != nil {
			return c.fail(err)
		}
		pid, err := spawnVMM(c.env.self, dir, l, p, *timeout, extra...)
		if err != nil {
			return c.fail(fmt.Errorf("starting %s: %w", name, err))
		}
		c.printf("%s started (pid %d); console: gvmm console %s (log %s)\n", name, pid, name, p.ConsoleLog)
		return exitOK
	}
}

// spawnVMM runs "gvmm run --config" detached, in its own session, its
// console to the log and the console socket, and waits until the guest
// runs: the VMM's pid file is locked and its API says "running".
func spawnVMM(self string, dir *state.Dir, l *state.Lock, p state.Paths, timeout time.Duration, extra ...string) (int, error) {
	// vmm.log is kept across starts; once past the console log's limit it
	// moves to vmm.log.1, so that years of restarts cannot fill the disk.
	if st, err := os.Stat(p.VMMLog); err == nil && st.Size() >= console.LogLimit {
		if err := os.Rename(p.VMMLog, p.VMMLog+".1"); err != nil {
			return 0, err
		}
	}
	vmmLog, err := os.OpenFile(p.VMMLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer vmmLog.Close()
	logStart, err := vmmLog.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	// The VMM writes the console log itself, rotating it: a guest that
	// writes without end must not fill the disk. So it does vmm.log, for
	// a VMM that runs long; stderr catches what comes before.
	cmd := exec.Command(self, "run", "--config", dir.DefinitionPath(l.Name()),
		"--api-socket", p.API, "--console-socket", p.Console, "--console-log", p.ConsoleLog, "--pid-file", p.PID,
		"--log-file", p.VMMLog)
	cmd.Args = append(cmd.Args, extra...)
	cmd.Stderr, cmd.Dir = vmmLog, "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	// Reaps the VMM if it ends while this process lives; a VMM that
	// outlives it is reparented.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return 0, fmt.Errorf("the VMM ended (%v) before the guest started; its log:\n%s", err, tailFrom(p.VMMLog, logStart))
		case <-deadline.C:
			_ = cmd.Process.Kill()
			<-exited
			if err := l.RemoveRunFiles(); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("the guest did not start within %s, so its VMM was killed; its log:\n%s", timeout, tailFrom(p.VMMLog, logStart))
		case <-tick.C:
		}
		st, err := dir.Status(l.Name())
		if err != nil {
			return 0, err
		}
		if st.State != state.Running || st.PID != cmd.Process.Pid {
			continue
		}
		if info, err := vmmInfo(dir, l.Name()); err == nil && info.State == api.StateRunning {
			return cmd.Process.Pid, nil
		}
	}
}

// tailFrom returns the last lines of the file at path written after off.
func tailFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, off, 1<<20))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-logTail):], "\n")
}

func shutdownCmd(c *vmCommand) func() int {
	timeout := c.fs.Duration("timeout", 30*time.Second, "how long (`D`) the guest has to power off before it is stopped hard")
	return func() int {
		dir, l, st, code, ok := c.running(c.args[0])
		if !ok {
			return code
		}
		defer l.Unlock()
		cl := api.NewClient(dir.Paths(l.Name()).API)
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		if err := cl.Shutdown(ctx); err != nil {
			c.warn("pressing the power button: %v; stopping it now", err)
		} else if waitStopped(dir, l.Name(), *timeout) {
			c.printf("%s powered off\n", l.Name())
			return exitOK
		} else {
			c.warn("%s did not power off within %s; stopping it now", l.Name(), *timeout)
		}
		if err := hardStop(dir, l, st.PID); err != nil {
			return c.fail(err)
		}
		c.printf("%s stopped\n", l.Name())
		return exitOK
	}
}

func destroyCmd(c *vmCommand) func() int {
	return func() int {
		dir, l, st, code, ok := c.running(c.args[0])
		if !ok {
			return code
		}
		defer l.Unlock()
		if err := hardStop(dir, l, st.PID); err != nil {
			return c.fail(err)
		}
		c.printf("%s destroyed\n", l.Name())
		return exitOK
	}
}

// running takes the lock of a defined, running VM; ok is false (and the
// lock released) when the command should exit with code.
func (c *vmCommand) running(name string) (_ *state.Dir, _ *state.Lock, _ state.Status, code int, ok bool) {
	dir, l, err := c.lock(name)
	if err != nil {
		return nil, nil, state.Status{}, c.fail(err), false
	}
	if _, err := dir.Load(name); err != nil {
		l.Unlock()
		return nil, nil, state.Status{}, c.fail(err), false
	}
	st, err := c.status(dir, l)
	if err == nil && st.State != state.Running {
		err = fmt.Errorf("%s is not running", name)
	}
	if err != nil {
		l.Unlock()
		return nil, nil, state.Status{}, c.fail(err), false
	}
	return dir, l, st, 0, true
}

// waitStopped waits up to d for name's VMM to end.
func waitStopped(dir *state.Dir, name string, d time.Duration) bool {
	for end := time.Now().Add(d); ; time.Sleep(pollInterval) {
		st, err := dir.Status(name)
		if err == nil && st.State != state.Running {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// hardStop ends a running VMM: through its API, or, if it does not
// answer or end, with SIGKILL (pid is the process holding the pid file's
// lock, so it cannot be a reused pid) and a clean-up after it.
func hardStop(dir *state.Dir, l *state.Lock, pid int) error {
	cl := api.NewClient(dir.Paths(l.Name()).API)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := cl.Stop(ctx); err == nil && waitStopped(dir, l.Name(), stopWait) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing the VMM (pid %d): %w", pid, err)
	}
	if !waitStopped(dir, l.Name(), stopWait) {
		return fmt.Errorf("the VMM (pid %d) still runs %s after SIGKILL", pid, stopWait)
	}
	return l.RemoveRunFiles()
}

func consoleCmd(c *vmCommand) func() int {
	raw := c.fs.Bool("raw", false, "pass the guest's output on as it is, escape sequences included (the default when stdout is not a terminal)")
	filter := c.fs.Bool("filter", false, "drop the guest's control and escape sequences but colours (the default when stdout is a terminal)")
	return func() int {
		if *raw && *filter {
			return c.usageErr("--raw and --filter exclude each other")
		}
		name := c.args[0]
		dir, err := c.open()
		if err != nil {
			return c.fail(err)
		}
		if _, err := dir.Load(name); err != nil {
			return c.fail(err)
		}
		if st, err := dir.Status(name); err != nil || st.State != state.Running {
			if err == nil {
				err = fmt.Errorf("%s is not running", name)
			}
			return c.fail(err)
		}
		conn, err := net.Dial("unix", dir.Paths(name).Console)
		if err != nil {
			return c.fail(fmt.Errorf("attaching to %s's console: %w", name, err))
		}
		defer conn.Close()
		if console.IsTerminal(c.env.stdin) {
			restore, err := console.MakeRaw(c.env.stdin)
			if err != nil {
				return c.fail(err)
			}
			defer func() {
				if err := restore(); err != nil {
					c.warn("restoring the terminal: %v", err)
				}
			}()
		}
		fmt.Fprintf(c.env.stderr, "Attached to %s's console; Ctrl-A x detaches.\r\n", name)
		// Ctrl-A x or the end of stdin detaches; the VMM closing the
		// connection (the VM ended) ends the output.
		go func() {
			_, _ = io.Copy(conn, console.NewEscapeReader(c.env.stdin, func() {}))
			conn.Close()
		}()
		// On a terminal the guest's escape sequences would reach the
		// admin's terminal: a hostile guest could retitle it, make it
		// answer into the input, redefine keys. Only text and colours
		// pass unless --raw.
		out := c.env.stdout
		if f, ok := out.(*os.File); *filter || !*raw && ok && console.IsTerminal(f) {
			out = console.NewFilter(out)
		}
		_, _ = io.Copy(out, conn)
		fmt.Fprintf(c.env.stderr, "\r\nDetached from %s's console.\r\n", name)
		return exitOK
	}
}
