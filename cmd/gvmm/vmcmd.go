package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

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
	return cmdEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, self: self,
		progressBar: console.IsTerminal(os.Stderr), sysRoot: "/"}
}

// vmCommand is the flag handling shared by the VM commands.
type vmCommand struct {
	name     string
	env      cmdEnv
	fs       *flag.FlagSet
	stateDir *string
	args     []string // positional arguments after parse
}

func newVMCommand(env cmdEnv, name, usage string) *vmCommand {
	c := &vmCommand{name: name, env: env, fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.fs.SetOutput(env.stderr)
	def := env.getenv(state.EnvRoot)
	if def == "" {
		def = state.DefaultRoot
	}
	c.stateDir = c.fs.String("state-dir", def, "the state folder (also "+state.EnvRoot+")")
	c.fs.Usage = func() {
		fmt.Fprintf(c.fs.Output(), "usage: gvmm %s %s\n\nFlags:\n", name, usage)
		c.fs.PrintDefaults()
	}
	return c
}

// parse parses args, flags and positional arguments in any order, and
// checks that there are want positional ones. ok is false when the
// command should exit with code.
func (c *vmCommand) parse(args []string, want ...string) (code int, ok bool) {
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK, false
			}
			return exitUsage, false
		}
		if c.fs.NArg() == 0 {
			break
		}
		c.args = append(c.args, c.fs.Arg(0))
		args = c.fs.Args()[1:]
	}
	switch {
	case len(c.args) < len(want):
		return c.usageErr("missing %s", strings.Join(want[len(c.args):], " ")), false
	case len(c.args) > len(want):
		return c.usageErr("unexpected argument %q", c.args[len(want)]), false
	}
	return 0, true
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
