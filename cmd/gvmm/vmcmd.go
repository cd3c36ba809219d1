package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/console"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/machine/vmdef"
)

// lockWait is how long a command waits for another one on the same VM.
const lockWait = time.Minute

// cmdEnv is the world a VM command sees; tests make their own.
type cmdEnv struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// self is the gvmm binary that start runs as the VMM.
	self string
	// stdin is the console's input.
	stdin *os.File
	// progressBar draws backup progress as a bar (stderr is a terminal).
	progressBar bool
	// sysRoot is where /proc and /sys are.
	sysRoot string
}

func osEnv() cmdEnv {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	return cmdEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, self: self,
		progressBar: console.IsTerminal(os.Stderr), sysRoot: "/"}
}

// vmCommand is what the VM commands share: the state folder flag, their
// positional arguments and how they report.
type vmCommand struct {
	name     string
	env      cmdEnv
	fs       *pflag.FlagSet
	stateDir *string
	args     []string // positional arguments, as many as the command's use names
}

// vmCmd makes a VM command. use is its name and positional arguments
// ("backup NAME DEST"); setup adds the command's flags to c.fs and
// returns what runs it once they and c.args are parsed.
func vmCmd(env cmdEnv, use, short string, setup func(c *vmCommand) func() int) *cobra.Command {
	want := strings.Fields(use)[1:]
	cmd := &cobra.Command{Use: use, Short: short, Args: positional(want...)}
	c := &vmCommand{name: cmd.Name(), env: env, fs: cmd.Flags()}
	def := env.getenv(state.EnvRoot)
	if def == "" {
		def = state.DefaultRoot
	}
	c.stateDir = c.fs.String("state-dir", def, "the state `DIR` (also "+state.EnvRoot+")")
	run := setup(c)
	cmd.RunE = func(_ *cobra.Command, args []string) error {
		c.args = args
		return exitCode(run())
	}
	cmd.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch {
		case len(args) >= len(want):
			return nil, cobra.ShellCompDirectiveNoFileComp
		case want[len(args)] == "NAME":
			names, err := state.Names(*c.stateDir)
			if err != nil {
				return nil, cobra.ShellCompDirectiveError
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveDefault // a file or folder
	}
	return cmd
}

// positional checks that a command has the positional arguments want.
func positional(want ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		switch {
		case len(args) < len(want):
			return fmt.Errorf("missing %s", strings.Join(want[len(args):], " "))
		case len(args) > len(want):
			return fmt.Errorf("unexpected argument %q", args[len(want)])
		}
		return nil
	}
}

func (c *vmCommand) usageErr(format string, a ...any) int {
	fmt.Fprintf(c.env.stderr, "gvmm %s: "+format+"\n", append([]any{c.name}, a...)...)
	return exitUsage
}

// fail reports err and returns the exit status for it: an invalid
// definition is a usage error, anything else a failure.
func (c *vmCommand) fail(err error) int {
	fmt.Fprintf(c.env.stderr, "gvmm %s: %v\n", c.name, err)
	if _, ok := errors.AsType[*vmdef.Error](err); ok {
		return exitUsage
	}
	return exitFault
}

func (c *vmCommand) warn(format string, a ...any) {
	fmt.Fprintf(c.env.stderr, "gvmm %s: warning: "+format+"\n", append([]any{c.name}, a...)...)
}

func (c *vmCommand) printf(format string, a ...any) {
	fmt.Fprintf(c.env.stdout, format, a...)
}

func (c *vmCommand) open() (*state.Dir, error) { return state.Open(*c.stateDir) }

// lock opens the state folder and takes name's lock.
func (c *vmCommand) lock(name string) (*state.Dir, *state.Lock, error) {
	dir, err := c.open()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), lockWait)
	defer cancel()
	l, err := dir.Lock(ctx, name)
	return dir, l, err
}

// status returns name's state, first cleaning up after a VMM that died,
// which needs the lock the caller holds.
func (c *vmCommand) status(dir *state.Dir, l *state.Lock) (state.Status, error) {
	cleaned, err := l.ClearStale()
	if err != nil {
		return state.Status{}, err
	}
	st, err := dir.Status(l.Name())
	if cleaned {
		c.warn("%s's VMM (pid %d) had died: its pid file and sockets are cleaned up", l.Name(), st.PID)
	}
	return st, err
}
