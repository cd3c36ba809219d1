// Package kvm is a typed wrapper over the Linux KVM API (x86-64).
//
// It knows ioctls and kernel structs and nothing about Linux guests,
// boot protocols or devices: those live in boot/, devices/ and machine/,
// which use this package to create and drive virtual machines.
//
// The layering follows the kernel's three kinds of KVM file descriptor,
// each wrapped by a type that owns an *os.File and has a Close method:
//
//   - System is /dev/kvm: capability queries, supported CPUID and MSR
//     lists, and VM creation.
//   - VM is a virtual machine: guest memory slots, the in-kernel irqchip
//     and PIT, interrupt lines, irqfds, ioeventfds, GSI routing, MSIs, the
//     kvmclock, and vCPU creation.
//   - VCPU is a virtual CPU: registers, MSRs, CPUID, LAPIC, MP state, and
//     Run, which enters the guest and returns a decoded Exit.
//
// Every kernel struct the package passes to an ioctl is mirrored by a Go
// struct with the same layout; each mirror names the struct it mirrors and
// is checked against the kernel header's size and field offsets in tests.
// Only files named *_unsafe.go import unsafe.
//
// Errors from ioctls are *IoctlError values that name the ioctl and unwrap
// to the unix.Errno, so errors.Is(err, unix.EBADF) works. Opening /dev/kvm
// reports ErrNoKVM or ErrPermission with a hint on what to do.
//
// The contents of kvm_run are written by the kernel on behalf of a guest
// that must be assumed hostile; Run checks every offset and length it
// decodes against the mapping before handing out a slice into it.
package kvm
