package seccomp

import "golang.org/x/sys/unix"

// Snapshots is what a machine that may be snapshotted (PUT /vm/snapshot)
// adds to VMM: the folder made and checked empty, and the memory file's
// length set past its last data so that a zero tail stays a hole.
// Shares allow the first two already: a machine with them adds the rest.
// A snapshot of shares needs nothing more (their fids are saved from
// what the device knows; a restore reopens them before the filter).
func Snapshots() []Rule {
	return []Rule{
		{Syscall: unix.SYS_MKDIRAT},
		{Syscall: unix.SYS_GETDENTS64},
		{Syscall: unix.SYS_FTRUNCATE},
	}
}
