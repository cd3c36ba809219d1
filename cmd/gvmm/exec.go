package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/console"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/guestexec"
	"github.com/gvmm-dev/gvmm/internal/kmod"
	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/seccomp"
	"github.com/gvmm-dev/gvmm/machine/vmdef"
	"github.com/gvmm-dev/gvmm/virtio/vsock"
)

// exitExecFault is gvmm exec's status when COMMAND's own is unknown: a
// usage error, a VMM fault, a guest that panicked or never ran COMMAND.
// As docker run and env do, it keeps clear of the statuses shells give
// (126, 127, 128+N); a message on stderr always says which it was.
const exitExecFault = 125

// execCmdline makes a panic end the machine at once; execQuiet keeps the
// console for COMMAND (no kernel messages) unless --verbose.
const (
	execCmdline = "console=ttyS0 reboot=k panic=-1"
	execQuiet   = " quiet loglevel=0"
)

func newExecCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec [flags] -- COMMAND [ARGS...]",
		Short: "run a command in a VM whose / is the host's",
		Long: `Run COMMAND in a VM whose / is the host's, in this folder and environment,
and exit with its status (125: gvmm's own failure).`,
		Annotations: map[string]string{annotUsageStatus: strconv.Itoa(exitExecFault)},
	}
	fs := cmd.Flags()
	// Flags after COMMAND are COMMAND's.
	fs.SetInterspersed(false)
	var (
		shares []machine.Share
		// The defaults depend on the host: --help names them as uname -r does.
		kernel   = fs.String("kernel", "", "the kernel `FILE` to boot (default /boot/vmlinuz-$(uname -r))")
		modules  = fs.String("modules", "", "the kernel's modules folder `DIR` (default /lib/modules/$(uname -r))")
		cpus     = fs.Int("cpus", 1, "`N` vCPUs")
		memory   = fs.String("memory", "512M", "guest memory `SIZE`: 512M, 2G or a plain number of MiB")
		rw       = fs.Bool("rw", false, "the guest writes to the host's / (default: a tmpfs overlay takes the writes)")
		verbose  = fs.Bool("verbose", false, "show the guest kernel's messages on the console, to see why a guest fails")
		logLevel = fs.String("log-level", "warn", "`LEVEL` of the logs: debug, info, warn or error")
	)
	fs.Func("share", "also mount DIR at DIR in the guest as `DIR,tag=TAG[,readonly][,setid]`, writable unless readonly (repeatable)", func(v string) error {
		s, err := vmdef.ParseShare(v)
		if err != nil {
			return err
		}
		shares = append(shares, s)
		return nil
	})
	run := func(args []string) int {
		fail := func(format string, a ...any) int {
			fmt.Fprintf(os.Stderr, "gvmm exec: "+format+"\n", a...)
			return exitExecFault
		}
		if len(args) == 0 {
			return fail("no COMMAND: gvmm exec [FLAGS] -- COMMAND [ARGS...]")
		}
		mem, err := machine.ParseSize(*memory)
		if err != nil {
			return fail("--memory: %v", err)
		}
		var level slog.Level
		if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
			return fail("--log-level %q: want debug, info, warn or error", *logLevel)
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

		cwd, err := os.Getwd()
		if err != nil {
			return fail("%v", err)
		}
		self, err := os.Executable()
		if err != nil {
			return fail("finding gvmm's executable: %v", err)
		}
		if err := guestexec.CheckStatic(self); err != nil {
			return fail("%v", err)
		}
		if *kernel == "" {
			*kernel = "/boot/vmlinuz-" + kernelRelease()
		}
		if *modules == "" {
			*modules = "/lib/modules/" + kernelRelease()
		}
		mods, err := kmod.Resolve(*modules, guestexec.Modules(*rw)...)
		if err != nil {
			return fail("the guest's modules (--modules): %v", err)
		}
		work, err := os.MkdirTemp("", "gvmm-exec-")
		if err != nil {
			return fail("%v", err)
		}
		defer os.RemoveAll(work)
		initrd, ctl := filepath.Join(work, "initrd.cpio"), filepath.Join(work, "control")
		if err := os.Mkdir(ctl, 0o700); err != nil {
			return fail("%v", err)
		}
		if err := guestexec.WriteInitramfs(initrd, self, mods); err != nil {
			return fail("building the initramfs: %v", err)
		}
		req := guestexec.Request{Args: args, Env: guestexec.Env(os.Environ(), cwd), Dir: cwd, RW: *rw,
			StdinPipe: !console.IsTerminal(os.Stdin)}
		cfg := machine.Config{
			Kernel: *kernel, Initrd: initrd, Cmdline: execCmdline + execQuiet, CPUs: *cpus, Memory: mem,
			Console: os.Stdout, ConsoleIn: os.Stdin, Log: log,
			Shares: []machine.Share{
				{Path: "/", Tag: guestexec.RootTag, ReadOnly: !*rw},
				{Path: ctl, Tag: guestexec.ControlTag},
			},
			// COMMAND's stderr: a vsock stream to StderrPort (no socket file).
			Vsock: &machine.VsockConfig{CID: vsock.MinCID},
		}
		if *verbose {
			cfg.Cmdline = execCmdline
		}
		cfg.ConsoleIn = &guestexec.Input{R: os.Stdin, Dir: ctl}
		for _, s := range shares {
			abs, err := filepath.Abs(s.Path)
			if err != nil {
				return fail("--share %s: %v", s.Path, err)
			}
			s.Path = abs
			cfg.Shares = append(cfg.Shares, s)
			req.Mounts = append(req.Mounts, guestexec.Mount{Tag: s.Tag, Path: abs})
		}
		if err := guestexec.WriteRequest(ctl, req); err != nil {
			return fail("%v", err)
		}
		return runExec(cfg, ctl, log)

	}
	cmd.RunE = func(_ *cobra.Command, args []string) error { return exitCode(run(args)) }
	return cmd
}

// runExec runs the machine and returns COMMAND's status.
func runExec(cfg machine.Config, ctl string, log *slog.Logger) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "gvmm exec: "+format+"\n", a...)
		return exitExecFault
	}
	m, err := machine.New(cfg)
	if err != nil {
		return fail("%v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := m.Start(ctx); err != nil {
		return fail("starting the machine: %v", err)
	}
	// The guest connects long after this: its kernel has to boot first.
	stderrDone, err := copyStderr(m)
	if err != nil {
		m.Stop()
		_ = m.Wait()
		return fail("%v", err)
	}
	rules := append(seccomp.VMM(), seccomp.Shares()...)
	if err := seccomp.Install(rules); err != nil {
		m.Stop()
		_ = m.Wait()
		return fail("installing the seccomp filter: %v", err)
	}
	log.Debug("seccomp filter installed", "rules", len(rules))
	if err := m.Wait(); err != nil {
		return fail("the machine failed: %v", err)
	}
	<-stderrDone
	if ctx.Err() != nil {
		return fail("stopped by a signal before COMMAND ended")
	}
	status, err := guestexec.Status(ctl)
	switch {
	case errors.Is(err, fs.ErrNotExist) && m.ExitReason() == machine.ExitReboot:
		return fail("the guest kernel rebooted (a panic?) before COMMAND's status arrived")
	case errors.Is(err, fs.ErrNotExist):
		return fail("the guest ended without running COMMAND to its end (see the console output above)")
	case err != nil:
		return fail("%v", err)
	}
	return status
}

// copyStderr copies the guest's connection to StderrPort, COMMAND's
// stderr, to ours. The channel closes once it is copied whole, or once
// the machine has ended, which closes the listener and the connection.
func copyStderr(m *machine.Machine) (<-chan struct{}, error) {
	l, err := m.ListenVsock(guestexec.StderrPort)
	if err != nil {
		return nil, fmt.Errorf("COMMAND's stderr: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			return // the machine ended before the guest connected
		}
		defer c.Close()
		// Through a plain Writer: *os.File's ReadFrom would splice through
		// a pipe, and pipe2 is not among the calls seccomp allows.
		_, _ = io.Copy(struct{ io.Writer }{os.Stderr}, c)
	}()
	return done, nil
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
