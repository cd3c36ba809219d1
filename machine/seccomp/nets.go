package seccomp

import "golang.org/x/sys/unix"

// Nets is what virtio-net devices add to VMM: frames move with readv and
// writev between guest memory and the TAP, whose offloads follow the
// driver's features on each driver start (TUNSETOFFLOAD); the TAP itself
// is opened and set up before the filter goes in.
func Nets() []Rule {
	return []Rule{
		{Syscall: unix.SYS_READV},
		{Syscall: unix.SYS_WRITEV},
		ioctl(unix.TUNSETOFFLOAD),
	}
}
