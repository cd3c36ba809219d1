package seccomp

import "golang.org/x/sys/unix"

// Shares is what a machine with virtio-9p shares adds to VMM: the file
// calls of package hostfs, each relative to a descriptor the share
// opened (openat2 with RESOLVE_BENEATH) or to its /proc/self/fd link.
// Not listed: mknodat, whose device nodes the shares refuse.
func Shares() []Rule {
	return []Rule{
		{Syscall: unix.SYS_OPENAT2},
		{Syscall: unix.SYS_MKDIRAT},
		{Syscall: unix.SYS_SYMLINKAT},
		{Syscall: unix.SYS_LINKAT},
		{Syscall: unix.SYS_READLINKAT},
		{Syscall: unix.SYS_FCHMODAT},
		{Syscall: unix.SYS_TRUNCATE},
		{Syscall: unix.SYS_UTIMENSAT},
		{Syscall: unix.SYS_FSTATFS},
		{Syscall: unix.SYS_GETDENTS64},
	}
}
