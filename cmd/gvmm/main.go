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
	"fmt"
	"os"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/guestexec"
)

// Exit statuses.
const (
	exitOK    = 0 // the guest powered off, rebooted or was stopped
	exitFault = 1 // a VMM or guest fault
	exitUsage = 2 // bad command line
)

func main() {
	if guestexec.IsInit() {
		// Copied into gvmm exec's initramfs as /init: see guestexec.
		guestexec.Init()
	}
	os.Exit(dispatch(os.Args[1:]))
}

func dispatch(args []string) int {
	if len(args) == 0 {
		usage()
		return exitUsage
	}
	switch args[0] {
	case "run":
		return runCmd(args[1:])
	case "exec":
		return execCmd(args[1:])
	case "ctl":
		return ctlCmd(args[1:])
	case "define":
		return defineCmd(osEnv(), args[1:])
	case "undefine":
		return undefineCmd(osEnv(), args[1:])
	case "list":
		return listCmd(osEnv(), args[1:])
	case "start":
		return startCmd(osEnv(), args[1:])
	case "console":
		return consoleCmd(osEnv(), os.Stdin, args[1:])
	case "shutdown":
		return shutdownCmd(osEnv(), args[1:])
	case "destroy":
		return destroyCmd(osEnv(), args[1:])
	case "backup":
		return backupCmd(osEnv(), args[1:])
	case "restore":
		return restoreCmd(osEnv(), args[1:])
	case "host":
		return hostCmd(osEnv(), args[1:])
	case "metrics":
		return metricsCmd(osEnv(), args[1:])
	case "top":
		return topCmd(osEnv(), args[1:])
	case "help", "-h", "--help":
		usage()
		return exitOK
	}
	fmt.Fprintf(os.Stderr, "gvmm: unknown command %q\n", args[0])
	usage()
	return exitUsage
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: gvmm COMMAND [FLAGS]

Commands:
  run       boot a Linux kernel (gvmm run --help for its flags)
  exec      run a command in a VM whose / is the host's (gvmm exec --help)
  ctl       control a running VM through its API socket (gvmm ctl --help)

VMs defined in the state folder (--state-dir, $GVMM_STATE_DIR, /var/lib/gvmm):
  define FILE                 store a VM definition (a JSON file)
  undefine NAME               remove a stopped VM's definition (its images stay)
  list [--json]               the VMs, their state, vCPUs, memory, balloon and uptime
  start NAME                  boot a VM in the background
  console NAME                attach to its serial console (Ctrl-A x detaches)
  shutdown NAME [--timeout D] press its power button, stop it after D (30s)
  destroy NAME                stop it at once
  backup NAME DEST            copy its definition, kernel, initrd and disks with checksums
  restore DEST [--name NEW] [--disk-dir DIR]
                              check a backup and define the VM from it
  host [--json]               the host's CPUs, memory and KSM, and what running VMs take
  metrics NAME                its metrics in Prometheus' text format
  top [--interval D] [--iterations N]
                              running VMs' CPU, memory, disk and net rates, refreshed in place
`)
}
