package seccomp

import "golang.org/x/sys/unix"

// Nets is what virtio-net devices add to VMM: frames move with readv and
// writev between guest memory and the TAP. The TAP's ioctls
// (TUNSETOFFLOAD on each driver start) pass VMM's unrestricted ioctl,
// which KVM_RUN and the other KVM calls need; the TAP itself is opened
// before the filter goes in.
func Nets() []Rule {
	return []Rule{
		{Syscall: unix.SYS_READV},
		{Syscall: unix.SYS_WRITEV},
	}
}
