package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/console"
	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/api"
)

func runCmd(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var (
		cfg      machine.Config
		memory   = fs.String("memory", "512M", "guest memory: 512M, 2G or a plain number of MiB")
		logLevel = fs.String("log-level", "info", "debug, info, warn or error")
		onReboot = fs.String("on-reboot", "exit", "what a guest reboot does: exit or restart")
	)
	fs.StringVar(&cfg.Kernel, "kernel", "", "kernel: a bzImage, or an ELF vmlinux with a PVH entry (required)")
	fs.StringVar(&cfg.Initrd, "initrd", "", "initramfs image")
	fs.StringVar(&cfg.Cmdline, "cmdline", machine.DefaultCmdline, "kernel command line")
	fs.IntVar(&cfg.CPUs, "cpus", machine.DefaultCPUs, "number of vCPUs")
	fs.BoolVar(&cfg.AllowCPUOvercommit, "allow-cpu-overcommit", false, "allow more vCPUs than the host has logical CPUs")
	fs.BoolVar(&cfg.Mergeable, "mergeable", false, "let the host's KSM merge identical guest pages")
	fs.BoolVar(&cfg.HugePages, "hugepages", false, "back guest RAM with transparent huge pages")
	fs.Func("balloon", "add a virtio-balloon device: --balloon (size 0) or --balloon size=SIZE", func(v string) error {
		b, err := parseBalloon(v)
		if err != nil {
			return err
		}
		cfg.Balloon = b
		return nil
	})
	apiSocket := fs.String("api-socket", "", "serve the control API (HTTP+JSON) on this unix socket")
	fs.Func("disk", "raw disk image as FILE[,readonly][,serial=ID] (repeatable; vda, vdb, ...)", func(v string) error {
		d, err := parseDisk(v)
		if err != nil {
			return err
		}
		cfg.Disks = append(cfg.Disks, d)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: gvmm run --kernel FILE [--initrd FILE] [--cmdline STR] [--cpus N] [--memory SIZE] [--disk FILE[,readonly][,serial=ID]]... [--balloon [size=SIZE]] [--api-socket PATH] [--on-reboot exit|restart] [--log-level LEVEL]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(joinBalloonArgs(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "gvmm run: "+format+"\n", a...)
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	if cfg.Kernel == "" {
		return usageErr("--kernel is required")
	}
	if cfg.CPUs < 1 {
		return usageErr("--cpus %d: a guest needs at least one vCPU", cfg.CPUs)
	}
	size, err := machine.ParseSize(*memory)
	if err != nil {
		return usageErr("--memory: %v", err)
	}
	cfg.Memory = size
	switch *onReboot {
	case "exit":
		cfg.OnReboot = machine.RebootExit
	case "restart":
		cfg.OnReboot = machine.RebootRestart
	default:
		return usageErr("--on-reboot %q: want exit or restart", *onReboot)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageErr("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Log = log
	cfg.Console = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, quit := context.WithCancel(ctx)
	defer quit()

	// A terminal is switched to raw mode, so that every key reaches the
	// guest, and restored on every way out; Ctrl-A x quits.
	var in io.Reader = os.Stdin
	if console.IsTerminal(os.Stdin) {
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
	cfg.ConsoleIn = console.NewEscapeReader(in, quit)

	m, err := machine.New(cfg)
	if err != nil {
		if errors.Is(err, machine.ErrInvalidConfig) {
			return usageErr("%v", err)
		}
		log.Error("creating the machine", "err", err)
		return exitFault
	}
	var srv *api.Server
	if *apiSocket != "" {
		srv = api.NewServer(control{m}, log)
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

// parseDisk parses FILE[,readonly][,serial=ID].
func parseDisk(v string) (machine.Disk, error) {
	parts := strings.Split(v, ",")
	d := machine.Disk{Path: parts[0]}
	if d.Path == "" {
		return d, fmt.Errorf("%q: no file", v)
	}
	for _, opt := range parts[1:] {
		switch key, val, hasVal := strings.Cut(opt, "="); {
		case key == "readonly" && !hasVal:
			d.ReadOnly = true
		case key == "serial" && hasVal:
			d.Serial = val
		default:
			return d, fmt.Errorf("%q: unknown option %q (want readonly or serial=ID)", v, opt)
		}
	}
	return d, nil
}

// joinBalloonArgs lets "--balloon" stand alone, or take "size=SIZE" as
// its next argument, as the flag package cannot.
func joinBalloonArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--balloon" || a == "-balloon" {
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

// parseBalloon parses "size=SIZE" ("size=0" for an empty balloon).
func parseBalloon(v string) (*machine.BalloonConfig, error) {
	size, ok := strings.CutPrefix(v, "size=")
	if !ok {
		return nil, fmt.Errorf("%q: want size=SIZE", v)
	}
	if size == "0" {
		return &machine.BalloonConfig{}, nil
	}
	n, err := machine.ParseSize(size)
	if err != nil {
		return nil, err
	}
	return &machine.BalloonConfig{Size: n}, nil
}
