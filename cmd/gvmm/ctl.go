package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/api"
)

const ctlUsage = `usage: gvmm ctl --api-socket PATH [--timeout D] COMMAND

Commands:
  info            the machine's state, vCPUs, memory, balloon and uptime (JSON)
  pause           stop the vCPUs
  resume          run them again
  shutdown        press the ACPI power button
  stop            end the machine at once
  balloon SIZE    take SIZE of memory from the guest: 256M, 1G or a number of MiB; 0 deflates
  balloon-stats   the guest's memory statistics (JSON)
`

func ctlCmd(args []string) int { return ctl(args, os.Stdout, os.Stderr) }

// ctl runs "gvmm ctl" with its output on stdout and errors on stderr.
func ctl(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("api-socket", "", "the VM's control socket (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), ctlUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "gvmm ctl: "+format+"\n", a...)
		return exitUsage
	}
	if *socket == "" {
		return usageErr("--api-socket is required")
	}
	if *timeout <= 0 {
		return usageErr("--timeout %v: want a positive duration", *timeout)
	}
	if fs.NArg() == 0 {
		return usageErr("missing command (info, pause, resume, shutdown, stop, balloon SIZE or balloon-stats)")
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]

	c := api.NewClient(*socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	nargs := 0
	var call func() (any, error) // a nil result prints nothing
	action := func(do func(context.Context) error) func() (any, error) {
		return func() (any, error) { return nil, do(ctx) }
	}
	switch cmd {
	case "info":
		call = func() (any, error) { return c.Info(ctx) }
	case "balloon-stats":
		call = func() (any, error) { return c.BalloonStats(ctx) }
	case "pause":
		call = action(c.Pause)
	case "resume":
		call = action(c.Resume)
	case "shutdown":
		call = action(c.Shutdown)
	case "stop":
		call = action(c.Stop)
	case "balloon":
		nargs = 1
		if len(rest) == 0 {
			return usageErr("balloon needs a SIZE, like 256M, 1G, a number of MiB or 0")
		}
		mib, err := parseBalloonSize(rest[0])
		if err != nil {
			return usageErr("balloon: %v", err)
		}
		call = action(func(ctx context.Context) error { return c.SetBalloon(ctx, mib) })
	default:
		return usageErr("unknown command %q", cmd)
	}
	if len(rest) > nargs {
		if strings.HasPrefix(rest[nargs], "-") {
			return usageErr("%s: flags go before the command", rest[nargs])
		}
		return usageErr("%s: unexpected argument %q", cmd, rest[nargs])
	}

	v, err := call()
	if err != nil {
		fmt.Fprintf(stderr, "gvmm ctl %s: %v\n", cmd, err)
		return exitFault
	}
	if v != nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			fmt.Fprintf(stderr, "gvmm ctl %s: %v\n", cmd, err)
			return exitFault
		}
	}
	return exitOK
}

// parseBalloonSize reads a balloon size in MiB: what machine.ParseSize
// takes (256M, 1G, a plain number of MiB) or zero, which it refuses.
func parseBalloonSize(s string) (uint64, error) {
	num := strings.TrimSpace(s)
	if n := len(num); n > 1 && strings.ContainsRune("KkMmGgTt", rune(num[n-1])) {
		num = num[:n-1]
	}
	if num != "" && strings.Trim(num, "0") == "" {
		return 0, nil
	}
	b, err := machine.ParseSize(s)
	if err != nil {
		return 0, err
	}
	if b%api.MiB != 0 {
		return 0, fmt.Errorf("size %q is not a whole number of MiB", s)
	}
	return b / api.MiB, nil
}
