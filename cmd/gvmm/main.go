// Command gvmm is the command line of the gvmm virtual machine monitor.
//
//	gvmm run --kernel FILE [--initrd FILE] [--cmdline STR] [--cpus N] [--memory SIZE]
//	gvmm run --config FILE
//	gvmm exec [FLAGS] -- COMMAND [ARGS...]
//
// The guest's serial console owns stdout (and stdin); logs go to stderr.
// The VM commands (define, start, backup, ...) keep definitions and the
// run-time files of detached VMMs in a state folder.
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/guestexec"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/jail"
)

// Exit statuses.
const (
	exitOK    = 0 // the guest powered off, rebooted or was stopped
	exitFault = 1 // a VMM or guest fault
	exitUsage = 2 // bad command line
)

func main() {
	// A confined VMM is PID 1 too, of its own PID namespace.
	if _, confined := os.LookupEnv(jail.EnvSpec); guestexec.IsInit() && !confined {
		// Copied into gvmm exec's initramfs as /init: see guestexec.
		guestexec.Init()
	}
	os.Exit(execute(osEnv(), os.Args[1:]))
}

// Command groups in gvmm --help.
const (
	groupVM      = "vm"
	groupDefined = "defined"
)

// newRootCmd is gvmm's command tree. A new command is one more line in
// AddCommand; a new flag one more line where its command's flags are.
func newRootCmd(env cmdEnv) *cobra.Command {
	root := &cobra.Command{
		Use:   "gvmm",
		Short: "gvmm boots Linux guests on KVM",
		Long: `gvmm boots Linux guests on KVM.

The VM commands keep definitions and the run-time files of detached VMMs
in a state folder: --state-dir, $GVMM_STATE_DIR or /var/lib/gvmm.`,
		// gvmm alone is a usage error; an unknown command is one too.
		RunE:          needsCommand(env),
		SilenceErrors: true, // execute prints them, and sets the exit status
		SilenceUsage:  true, // an error names --help instead of drowning in it
	}
	root.AddGroup(
		&cobra.Group{ID: groupVM, Title: "Run a VM:"},
		&cobra.Group{ID: groupDefined, Title: "VMs defined in the state folder:"},
	)
	root.AddCommand(inGroup(groupVM, newRunCmd(), newExecCmd(), newCtlCmd(env))...)
	root.AddCommand(inGroup(groupDefined,
		vmCmd(env, "define FILE", "store a VM definition (a JSON file)", defineCmd),
		vmCmd(env, "undefine NAME", "remove a stopped VM's definition (its images stay)", undefineCmd),
		vmCmd(env, "list", "the VMs, their state, vCPUs, memory, balloon and uptime", listCmd),
		vmCmd(env, "start NAME", "boot a VM in the background", startCmd),
		vmCmd(env, "console NAME", "attach to a running VM's serial console (Ctrl-A x detaches)", consoleCmd),
		vmCmd(env, "shutdown NAME", "press a running VM's power button, stop it after --timeout", shutdownCmd),
		vmCmd(env, "destroy NAME", "stop a running VM at once", destroyCmd),
		vmCmd(env, "snapshot NAME DIR", "pause a running VM, save it into the new folder DIR, resume it", snapshotCmd),
		vmCmd(env, "backup NAME DEST", "copy a VM's definition, kernel, initrd and disks with checksums", backupCmd),
		vmCmd(env, "restore DEST", "check a backup and define the VM from it", restoreCmd),
		vmCmd(env, "host", "the host's CPUs, memory and KSM, and what running VMs take", hostCmd),
		vmCmd(env, "metrics NAME", "a running VM's metrics in Prometheus' text format", metricsCmd),
		vmCmd(env, "top", "running VMs' CPU, memory, disk and net rates, refreshed in place", topCmd),
	)...)
	root.AddCommand(newVersionCmd(env))
	root.SetOut(env.stdout) // before the completion command takes it
	root.SetErr(env.stderr)
	root.InitDefaultCompletionCmd()
	if c, _, err := root.Find([]string{"completion"}); err == nil {
		c.Args, c.RunE = cobra.NoArgs, needsCommand(env) // which shell
	}
	root.SetFlagErrorFunc(twoDashes)
	return root
}

// needsCommand runs a command that is nothing without one of its
// subcommands: it prints the usage on stderr and exits 2.
func needsCommand(env cmdEnv) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		fmt.Fprint(env.stderr, cmd.UsageString())
		return exitError{exitUsage}
	}
}

// inGroup puts cmds in the help group id.
func inGroup(id string, cmds ...*cobra.Command) []*cobra.Command {
	for _, c := range cmds {
		c.GroupID = id
	}
	return cmds
}

// twoDashes points out the second dash of a long flag written with one,
// as Go's flag package takes them.
func twoDashes(cmd *cobra.Command, err error) error {
	if e, ok := errors.AsType[*pflag.NotExistError](err); ok {
		name, _, _ := strings.Cut(e.GetSpecifiedShortnames(), "=")
		if len(name) > 1 && cmd.Flags().Lookup(name) != nil {
			return fmt.Errorf("%w: long flags take two dashes, --%s", err, name)
		}
	}
	return err
}

// execute runs the command line args and returns gvmm's exit status.
func execute(env cmdEnv, args []string) int {
	root := newRootCmd(env)
	if len(args) > 0 && args[0] == "run" {
		args = append([]string{"run"}, joinBalloonArgs(args[1:])...)
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	if e, ok := errors.AsType[exitError](err); ok {
		return e.code // its message is out already
	}
	// cobra's errors (an unknown command or flag, a missing argument)
	// and the flags' own are bad usage.
	fmt.Fprintf(env.stderr, "%s: %v\nSee '%s --help'.\n", cmd.CommandPath(), err, cmd.CommandPath())
	if s, ok := cmd.Annotations[annotUsageStatus]; ok {
		if code, err := strconv.Atoi(s); err == nil {
			return code
		}
	}
	return exitUsage
}

// annotUsageStatus, in a command's annotations, is its exit status for
// bad usage when not exitUsage.
const annotUsageStatus = "gvmm-usage-status"

// exitError ends a command with a status whose message it has printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// exitCode is a command's status as RunE returns it.
func exitCode(code int) error {
	if code == exitOK {
		return nil
	}
	return exitError{code}
}
