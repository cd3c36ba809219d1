// Command kvmhost runs a program inside the KVM test host, with the
// terminal attached to it; with -auto it runs the program directly where
// /dev/kvm works. make run uses it to boot a guest with gvmm anywhere.
//
// In the program's arguments, {kernel} stands for the stock Debian
// kernel image and {asset:NAME} for the file given by -asset NAME=PATH,
// wherever the program runs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

func main() {
	os.Exit(run())
}

func run() int {
	auto := flag.Bool("auto", false, "run directly when /dev/kvm works here")
	cpus := flag.Int("cpus", 0, "test host vCPUs (0: as many as this machine has)")
	mem := flag.Int("memory", 6144, "test host memory in MiB")
	timeout := flag.Duration("timeout", 0, "stop the test host after this long (0: never)")
	var assets, modules multi
	flag.Var(&assets, "asset", "NAME=PATH: a file the program needs, as {asset:NAME} (repeatable)")
	flag.Var(&modules, "module", "a guest kernel module to carry in, with its dependencies (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: kvmhost [flags] [--] PROGRAM [ARGS...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		return 2
	}
	files := map[string]string{}
	for _, a := range assets {
		name, path, ok := strings.Cut(a, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "kvmhost: -asset %q: want NAME=PATH\n", a)
			return 2
		}
		files[name] = path
	}
	k, err := debkernel.Get()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvmhost: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *auto {
		if err := kvmhost.KVMWorks(); err == nil {
			return direct(ctx, expand(flag.Args()[1:], k.Vmlinuz, func(n string) string { return files[n] }))
		} else {
			fmt.Fprintf(os.Stderr, "kvmhost: no usable /dev/kvm here (%v): running inside the KVM test host\n", err)
		}
	}
	cfg := kvmhost.Config{
		Program: flag.Arg(0),
		Args:    expand(flag.Args()[1:], kvmhost.KernelInside(k), kvmhost.AssetInside),
		Assets:  files,
		Modules: modules,
		CPUs:    *cpus,
		MemMiB:  *mem,
		Timeout: *timeout,
		Stdin:   os.Stdin,
		Stdout:  os.Stdout,
		Log:     os.Stderr,
	}
	start := time.Now()
	status, err := kvmhost.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvmhost: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kvmhost: %s exited with status %d after %s\n", cfg.Program, status, time.Since(start).Round(time.Second))
	return status
}

func direct(ctx context.Context, args []string) int {
	cmd := exec.CommandContext(ctx, flag.Arg(0), args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode()
	case err != nil:
		fmt.Fprintf(os.Stderr, "kvmhost: %v\n", err)
		return 1
	}
	return 0
}

// expand replaces {kernel} and {asset:NAME} in args.
func expand(args []string, kernel string, asset func(string) string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		a = strings.ReplaceAll(a, "{kernel}", kernel)
		for {
			start := strings.Index(a, "{asset:")
			if start < 0 {
				break
			}
			end := strings.Index(a[start:], "}")
			if end < 0 {
				break
			}
			a = a[:start] + asset(a[start+len("{asset:"):start+end]) + a[start+end+1:]
		}
		out[i] = a
	}
	return out
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
