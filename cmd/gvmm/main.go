// Command gvmm is the command line of the gvmm virtual machine monitor.
//
//	gvmm run --kernel FILE [--initrd FILE] [--cmdline STR] [--cpus N] [--memory SIZE]
//
// The guest's serial console owns stdout (and stdin); logs go to stderr.
package main

import (
	"fmt"
	"os"
)

// Exit statuses.
const (
	exitOK    = 0 // the guest powered off, rebooted or was stopped
	exitFault = 1 // a VMM or guest fault
	exitUsage = 2 // bad command line
)

func main() {
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
	case "ctl":
		return ctlCmd(args[1:])
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
  run    boot a Linux kernel (gvmm run --help for its flags)
  ctl    control a running VM through its API socket (gvmm ctl --help)
`)
}
