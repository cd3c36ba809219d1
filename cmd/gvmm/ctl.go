package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/api"
)

// ctlCommands are gvmm ctl's commands, the argument each takes and what
// it does.
var ctlCommands = []struct{ name, arg, does string }{
	{"info", "", "the machine's state, vCPUs, memory, balloon and uptime (JSON)"},
	{"pause", "", "stop the vCPUs"},
	{"resume", "", "run them again"},
	{"snapshot", "DIR", "save the paused VM into the new folder DIR (restore with gvmm run --restore DIR)"},
	{"shutdown", "", "press the ACPI power button"},
	{"stop", "", "end the machine at once"},
	{"balloon", "SIZE", "take SIZE of memory from the guest: 256M, 1G or a number of MiB; 0 deflates"},
	{"balloon-stats", "", "the guest's memory statistics (JSON)"},
}

func newCtlCmd(env cmdEnv) *cobra.Command {
	long := "Control a running VM through its API socket.\n\nCommands:"
	var names []cobra.Completion
	for _, c := range ctlCommands {
		long += fmt.Sprintf("\n  %-16s%s", strings.TrimSpace(c.name+" "+c.arg), c.does)
		names = append(names, cobra.CompletionWithDesc(c.name, c.does))
	}
	cmd := &cobra.Command{
		Use:   "ctl --api-socket PATH [flags] COMMAND",
		Short: "control a running VM through its API socket",
		Long:  long,
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	}
	fs := cmd.Flags()
	// Flags go before COMMAND, as in the API's requests.
	fs.SetInterspersed(false)
	socket := fs.String("api-socket", "", "the VM's control socket `PATH` (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long (`D`) to wait for the answer")
	cmd.RunE = func(_ *cobra.Command, args []string) error {
		return exitCode(ctlRun(*socket, *timeout, args, env.stdout, env.stderr))
	}
	return cmd
}

// ctlRun runs "gvmm ctl" with its output on stdout and errors on stderr.
func ctlRun(socket string, timeout time.Duration, args []string, stdout, stderr io.Writer) int {
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "gvmm ctl: "+format+"\n", a...)
		return exitUsage
	}
	if socket == "" {
		return usageErr("--api-socket is required")
	}
	if timeout <= 0 {
		return usageErr("--timeout %v: want a positive duration", timeout)
	}
	if len(args) == 0 {
		return usageErr("missing command (info, pause, resume, snapshot DIR, shutdown, stop, balloon SIZE or balloon-stats)")
	}
	cmd, rest := args[0], args[1:]

	c := api.NewClient(socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
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
	case "snapshot":
		nargs = 1
		if len(rest) == 0 {
			return usageErr("snapshot needs a DIR, the folder to save the paused VM into")
		}
		dir, err := filepath.Abs(rest[0])
		if err != nil {
			return usageErr("snapshot: %v", err)
		}
		call = action(func(ctx context.Context) error { return c.Snapshot(ctx, dir) })
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
