package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/console"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/jail"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/internal/thp"
	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/machine/vmdef"
)

// openVMMLog sends the VMM's log, and its stderr, to path: added to, and
// rotated at console.LogLimit, so that a VMM that runs for long (a guest
// that reboots again and again, with on_reboot restart) cannot fill the
// disk. The log's own failures go to stderr, which is the log's current
// file: when that fails too, there is nowhere else.
func openVMMLog(path string) (*console.LogFile, error) {
	return console.AppendLog(path, console.LogLimit, slog.New(slog.NewTextHandler(os.Stderr, nil)), func(f *os.File) error {
		// A crash's trace, written by the runtime to fd 2, lands in the
		// current file, not in a rotated one.
		if err := unix.Dup3(int(f.Fd()), int(os.Stderr.Fd()), 0); err != nil {
			return fmt.Errorf("pointing stderr at %s: %w", f.Name(), err)
		}
		return nil
	})
}

func newRunCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run (--kernel FILE | --config FILE | --restore DIR) [flags]",
		Short: "boot a Linux kernel",
		Long: `Boot a Linux kernel, with the VM flags or the VM definition in --config FILE,
or resume the snapshot in --restore DIR (made with gvmm ctl snapshot or gvmm
snapshot) without a boot.

The guest's serial console owns stdout and stdin (Ctrl-A x quits); logs go
to stderr.`,
		Example: `  gvmm run --kernel bzImage --initrd initrd.cpio --memory 1G --disk root.img
  gvmm run --config vm.json --api-socket /run/vm.sock
  gvmm run --restore /srv/snap1 --net tap=clone1 --api-socket /run/clone1.sock`,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	fs := cmd.Flags()
	var (
		cfg      machine.Config
		memory   = fs.String("memory", "512M", "guest memory `SIZE`: 512M, 2G or a plain number of MiB")
		logLevel = fs.String("log-level", "info", "`LEVEL` of the logs: debug, info, warn or error")
		onReboot = fs.String("on-reboot", "exit", "what a guest reboot does (`ACTION`): exit or restart")
	)
	fs.StringVar(&cfg.Kernel, "kernel", "", "kernel `FILE`: a bzImage, or an ELF vmlinux with a PVH entry (required)")
	fs.StringVar(&cfg.Initrd, "initrd", "", "initramfs image `FILE`")
	kernelCache := fs.String("kernel-cache", "", "`DIR` where a bzImage is decompressed once, then booted through its PVH entry (default ~/.cache/gvmm/kernels); none boots it through its own decompressor")
	fs.StringVar(&cfg.Cmdline, "cmdline", machine.DefaultCmdline, "kernel command line `STR`")
	fs.IntVar(&cfg.CPUs, "cpus", machine.DefaultCPUs, "`N` vCPUs")
	fs.BoolVar(&cfg.AllowCPUOvercommit, "allow-cpu-overcommit", false, "allow more vCPUs than the host has logical CPUs")
	fs.BoolVar(&cfg.Mergeable, "mergeable", false, "let the host's KSM merge identical guest pages")
	fs.BoolVar(&cfg.HugePages, "hugepages", false, "back guest RAM with transparent huge pages")
	fs.Func("balloon", "add a virtio-balloon device: --balloon (size 0) or --balloon `size=SIZE`", func(v string) error {
		b, err := vmdef.ParseBalloon(v)
		if err != nil {
			return err
		}
		cfg.Balloon = b
		return nil
	})
	fs.Func("vsock", "add a virtio-vsock device: `cid=N,socket=PATH` (host clients connect to PATH; guest connections to host port P go to PATH_P)", func(v string) error {
		c, err := vmdef.ParseVsock(v)
		if err != nil {
			return err
		}
		cfg.Vsock = c
		return nil
	})
	fs.Func("net", "add a virtio-net device on a TAP: `tap=NAME[,mac=MAC]` (an absent TAP is created, and removed at exit) or fd=N[,mac=MAC] for an open TAP descriptor (repeatable; eth0, eth1, ...); with --restore, the TAPs of the snapshot's devices in order, instead of the ones it names (a clone needs its own)", func(v string) error {
		n, err := vmdef.ParseNet(v)
		if err != nil {
			return err
		}
		cfg.Nets = append(cfg.Nets, n)
		return nil
	})
	apiSocket := fs.String("api-socket", "", "serve the control API (HTTP+JSON) on the unix socket `PATH`")
	configFile := fs.String("config", "", "boot the VM definition in the JSON `FILE` instead of the VM flags")
	consoleSocket := fs.String("console-socket", "", "serve the serial console on the unix socket `PATH` (stdout keeps a copy; stdin is not read)")
	consoleLog := fs.String("console-log", "", "also write the console's output to `FILE`, rotated to FILE.1 at 16 MiB")
	logFile := fs.String("log-file", "", "write the logs, and stderr, to `FILE`, added to and rotated to FILE.1 at 16 MiB")
	pidFile := fs.String("pid-file", "", "write the VMM's pid to `FILE`, locked while it runs")
	restoreDir := fs.String("restore", "", "resume the snapshot in `DIR` instead of booting (the VM flags and --config come from it)")
	restorePaused := fs.Bool("paused", false, "with --restore: leave the restored VM paused until gvmm ctl resume")
	vsockSocket := fs.String("vsock-socket", "", "with --restore: serve the vsock device on the unix socket `PATH` instead of the snapshot's (each clone needs its own)")
	clockMode := fs.String("clock", "continue", "with --restore, what the guest's clock does (`MODE`): continue where it stopped, or realtime to jump by the time the snapshot waited")
	snapshotDir := fs.String("snapshot-dir", "", "with --user: the folder `DIR` the confined VMM may save snapshots in (PUT /vm/snapshot paths inside it; DIR must be writable by the user)")
	seccompMode := fs.String("seccomp", "on", "confine the VMM to the system calls it needs before the guest runs (`MODE`): on, or off for debugging")
	confine := addConfineFlags(fs)
	fs.Func("disk", "raw disk image as `FILE[,readonly][,serial=ID]`; ,, for a comma (repeatable; vda, vdb, ...)", func(v string) error {
		d, err := vmdef.ParseDisk(v)
		if err != nil {
			return err
		}
		cfg.Disks = append(cfg.Disks, d)
		return nil
	})
	fs.Func("share", "host folder as `DIR,tag=TAG[,readonly][,setid]` for mount -t 9p -o trans=virtio TAG; setid lets the guest make set-ID files; ,, for a comma (repeatable); with --restore: serves the snapshot's share TAG from DIR", func(v string) error {
		s, err := vmdef.ParseShare(v)
		if err != nil {
			return err
		}
		cfg.Shares = append(cfg.Shares, s)
		return nil
	})
	run := func(args []string) int {
		usageErr := func(format string, a ...any) int {
			fmt.Fprintf(os.Stderr, "gvmm run: "+format+"\n", a...)
			return exitUsage
		}
		if len(args) > 0 {
			return usageErr("unexpected argument %q", args[0])
		}
		var def *vmdef.Definition
		var restore *machine.RestoreOptions
		switch {
		case *restoreDir != "":
			var err error
			if restore, err = restoreFromFlags(fs, *clockMode, *restorePaused); err != nil {
				return usageErr("%v", err)
			}
			restore.VsockSocket, restore.Nets, restore.Shares = *vsockSocket, cfg.Nets, cfg.Shares
		case fs.Changed("paused") || fs.Changed("clock") || fs.Changed("vsock-socket"):
			return usageErr("--paused, --clock and --vsock-socket go with --restore")
		case *configFile != "":
			var err error
			if def, err = configFromFile(fs, *configFile, &cfg); err != nil {
				return usageErr("%v", err)
			}
		default:
			if err := configFromFlags(&cfg, *memory, *onReboot); err != nil {
				return usageErr("%v", err)
			}
		}
		// Where kernels are decompressed is the host's business, not the
		// VM's: it goes with a definition too.
		cfg.KernelCache = *kernelCache
		if *seccompMode != "on" && *seccompMode != "off" {
			return usageErr("--seccomp %q: want on or off", *seccompMode)
		}
		var level slog.Level
		if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
			return usageErr("--log-level %q: want debug, info, warn or error", *logLevel)
		}
		user, limits, err := confine.resolve(def)
		if err != nil {
			return usageErr("%v", err)
		}
		jailed, err := confinedSpec()
		if err != nil {
			return usageErr("%v", err)
		}
		if *snapshotDir != "" {
			if user == "" {
				return usageErr("--snapshot-dir goes with --user: an unconfined VMM saves snapshots anywhere it may write")
			}
			if *snapshotDir, err = filepath.Abs(*snapshotDir); err != nil {
				return usageErr("--snapshot-dir: %v", err)
			}
		}
		if user != "" && jailed == nil {
			files := runFiles{*apiSocket, *consoleSocket, *consoleLog, *logFile, *snapshotDir}
			if restore != nil {
				// The jail is made from the VM's configuration, which a
				// restore takes from the snapshot.
				m, err := machine.Restore(*restoreDir, *restore)
				if err != nil {
					fmt.Fprintf(os.Stderr, "gvmm run: %v\n", err)
					return exitFault
				}
				cfg = m.Config()
			}
			return supervise(user, limits, cfg, files, *pidFile, level)
		}
		var logOut io.Writer = os.Stderr
		if *logFile != "" {
			lf, err := openVMMLog(*logFile)
			if err != nil {
				fmt.Fprintf(os.Stderr, "gvmm run: %v\n", err)
				return exitFault
			}
			defer lf.Close()
			logOut = lf
		}
		log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))
		// Before the VMM opens anything: this may execute gvmm again.
		if err := thp.KeepOutOfRuntime(); err != nil {
			log.Warn("the VMM's own memory may take huge pages", "err", err)
		}
		// Only now: the run thp may have started again must know it is
		// a confined VMM, PID 1 of its namespace, not gvmm exec's init.
		if err := os.Unsetenv(jail.EnvSpec); err != nil {
			log.Error("clearing the jail's spec", "err", err)
			return exitFault
		}
		cfg.Log = log
		cfg.Console = os.Stdout
		if *pidFile != "" && jailed == nil { // a confined VMM's is its supervisor's
			pf, err := state.CreatePIDFile(*pidFile)
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

		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		ctx, quit := context.WithCancel(ctx)
		defer quit()

		// The console's copies go before stdout, whose failure (a closed
		// pipe) would stop io.MultiWriter before them.
		if *consoleLog != "" {
			lf, err := console.OpenLog(*consoleLog, console.LogLimit, log)
			if err != nil {
				log.Error("opening the console log", "err", err)
				return exitFault
			}
			defer lf.Close()
			cfg.Console = io.MultiWriter(lf, cfg.Console)
		}
		// With a console socket, its client is the console (and detaches
		// with Ctrl-A x on its side). Otherwise stdin is: a terminal is
		// switched to raw mode, so that every key reaches the guest, and
		// restored on every way out; Ctrl-A x quits.
		var in io.Reader = os.Stdin
		if *consoleSocket != "" {
			hub, err := console.Listen(*consoleSocket, log)
			if err != nil {
				log.Error("opening the console socket", "err", err)
				return exitFault
			}
			defer hub.Close()
			cfg.Console = io.MultiWriter(hub, cfg.Console)
			in = hub.Input()
		} else if console.IsTerminal(os.Stdin) {
			restore, err := console.MakeRaw(os.Stdin)
			if err != nil {
				log.Error("switching the terminal to raw mode", "err", err)
				return exitFault
			}
			defer func() {
				if err := restore(); err != nil {
					log.Warn("restoring the terminal", "err", err)
				}
			}()
		}
		if *consoleSocket == "" {
			in = console.NewEscapeReader(in, quit)
		}
		cfg.ConsoleIn = in
		cfg.BeforeRun = beforeRun(jailed, *seccompMode == "on", cfg, log)

		var m *machine.Machine
		if restore != nil {
			restore.Console, restore.ConsoleIn, restore.Log = cfg.Console, cfg.ConsoleIn, log
			// The filter's rules follow the devices, which the
			// snapshot has: Start calls this once m is set.
			restore.BeforeRun = func(reopen []string) error {
				return beforeRun(jailed, *seccompMode == "on", m.Config(), log)(reopen)
			}
			m, err = machine.Restore(*restoreDir, *restore)
		} else {
			m, err = machine.New(cfg)
		}
		if err != nil {
			if errors.Is(err, machine.ErrInvalidConfig) {
				return usageErr("%v", err)
			}
			log.Error("creating the machine", "err", err)
			return exitFault
		}
		var srv *api.Server
		if *apiSocket != "" {
			srv = api.NewServer(newControl(m, newSnapshotPlace(jailed, *snapshotDir)), log)
			if err := srv.Listen(*apiSocket); err != nil {
				log.Error("opening the API socket", "err", err)
				return exitFault
			}
			defer srv.Close()
		}
		if err := m.Start(ctx); err != nil {
			log.Error("starting the machine", "err", err)
			return exitFault
		}
		if srv != nil {
			go func() {
				if err := srv.Serve(ctx); err != nil {
					log.Error("the API server failed", "err", err)
				}
			}()
		}
		if err := m.Wait(); err != nil {
			log.Error("the machine failed", "err", err)
			return exitFault
		}
		log.Info("the machine ended", "reason", m.ExitReason().String())
		return exitOK

	}
	cmd.RunE = func(_ *cobra.Command, args []string) error { return exitCode(run(args)) }
	return cmd
}

// joinBalloonArgs lets "--balloon" stand alone, or take "size=SIZE" as
// its next argument, as pflag cannot.
func joinBalloonArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--balloon" {
			if i+1 < len(args) && strings.HasPrefix(args[i+1], "size=") {
				a += "=" + args[i+1]
				i++
			} else {
				a += "=size=0"
			}
		}
		out = append(out, a)
	}
	return out
}

// vmFlags are the flags a definition replaces.
var vmFlags = []string{"kernel", "initrd", "cmdline", "cpus", "memory", "disk", "share", "balloon", "vsock", "net",
	"mergeable", "hugepages", "allow-cpu-overcommit", "on-reboot"}

// configFromFile reads the VM definition at path into cfg; VM flags
// alongside it are refused rather than silently merged.
func configFromFile(fs *pflag.FlagSet, path string, cfg *machine.Config) (*vmdef.Definition, error) {
	var conflict string
	fs.Visit(func(f *pflag.Flag) {
		if conflict == "" && slices.Contains(vmFlags, f.Name) {
			conflict = f.Name
		}
	})
	if conflict != "" {
		return nil, fmt.Errorf("--%s: not with --config, the definition says it", conflict)
	}
	def, err := vmdef.ParseFile(path)
	if err == nil {
		err = def.CheckFiles()
	}
	if err == nil {
		err = def.CheckHost()
	}
	if err != nil {
		return nil, err
	}
	*cfg = def.Config
	return def, nil
}

// restoreFromFlags checks the flags of a restore: the machine comes from
// the snapshot, so VM flags and --config are refused, except --share,
// which points a share of the snapshot at another folder (a copy).
func restoreFromFlags(fs *pflag.FlagSet, clock string, paused bool) (*machine.RestoreOptions, error) {
	var conflict string
	fs.Visit(func(f *pflag.Flag) {
		// --net and --share give a restore other TAPs and folders
		// (RestoreOptions.Nets, Shares).
		if conflict == "" && f.Name != "net" && f.Name != "share" && (slices.Contains(vmFlags, f.Name) || f.Name == "config" || f.Name == "kernel-cache") {
			conflict = f.Name
		}
	})
	if conflict != "" {
		return nil, fmt.Errorf("--%s: not with --restore, the snapshot says it", conflict)
	}
	o := &machine.RestoreOptions{Paused: paused}
	switch clock {
	case "continue":
		o.Clock = machine.ClockContinue
	case "realtime":
		o.Clock = machine.ClockRealtime
	default:
		return nil, fmt.Errorf("--clock %q: want continue or realtime", clock)
	}
	return o, nil
}

// configFromFlags completes cfg from the flags that need parsing.
func configFromFlags(cfg *machine.Config, memory, onReboot string) error {
	if cfg.Kernel == "" {
		return errors.New("--kernel is required")
	}
	if cfg.CPUs < 1 {
		return fmt.Errorf("--cpus %d: a guest needs at least one vCPU", cfg.CPUs)
	}
	size, err := machine.ParseSize(memory)
	if err != nil {
		return fmt.Errorf("--memory: %w", err)
	}
	cfg.Memory = size
	if cfg.OnReboot, err = vmdef.ParseOnReboot(onReboot); err != nil {
		return fmt.Errorf("--on-reboot %w", err)
	}
	return nil
}
