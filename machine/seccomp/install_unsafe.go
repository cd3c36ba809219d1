package seccomp

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The report of a denied call is written by the SIGSYS handler in
// sigsys_amd64.s from denyMessages: one slot per call number, the last
// for a SIGSYS that seccomp did not send. Each slot is a length byte and
// the text. The handler cannot format: it runs without the Go runtime.
const (
	msgShift = 7
	msgSize  = 1 << msgShift
	msgSlots = 512 + 1
)

var (
	denyMessages     [msgSlots][msgSize]byte
	denyMessagesOnce sync.Once
)

func fillDenyMessages() {
	set := func(slot int, text string) {
		n := copy(denyMessages[slot][1:], text)
		denyMessages[slot][0] = byte(n)
	}
	for nr := range msgSlots - 1 {
		set(nr, fmt.Sprintf("level=ERROR msg=\"seccomp: system call not allowed; exiting\" syscall=%s nr=%d\n", SyscallName(nr), nr))
	}
	set(msgSlots-1, "level=ERROR msg=\"SIGSYS from outside seccomp; exiting\"\n")
}

// sigsysHandler is the SIGSYS handler (a C signal handler, never called
// from Go); sigsysHandlerAddr returns its address.
func sigsysHandler()
func sigsysHandlerAddr() uintptr

// kernelSigaction mirrors the kernel's struct sigaction on x86-64
// (arch/x86/include/asm/signal.h, with a 64-bit sigset_t).
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const (
	saSiginfo  = 0x4
	saRestorer = 0x04000000 // the kernel requires one on x86-64; ours never returns
	saOnstack  = 0x08000000 // the Go runtime gives every thread a signal stack
	sigsetSize = 8
)

// installSigsysHandler replaces the Go runtime's SIGSYS handler, which
// would turn a denied call into a crash dump, with ours.
func installSigsysHandler() error {
	sa := kernelSigaction{
		handler:  sigsysHandlerAddr(),
		flags:    saSiginfo | saOnstack | saRestorer,
		restorer: sigsysHandlerAddr(),
		mask:     ^uint64(0),
	}
	// unsafe: rt_sigaction reads the struct during the call only.
	if _, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSYS), uintptr(unsafe.Pointer(&sa)), 0, sigsetSize, 0, 0); errno != 0 {
		return fmt.Errorf("seccomp: installing the SIGSYS handler: %w", errno)
	}
	return nil
}

// Install builds the filter of rules and installs it on every thread of
// the process, for the rest of its life: there is no way back. It sets
// no_new_privs, which the kernel requires of an unprivileged process.
func Install(rules []Rule) error {
	prog, err := Build(rules)
	if err != nil {
		return err
	}
	denyMessagesOnce.Do(fillDenyMessages)
	if err := installSigsysHandler(); err != nil {
		return err
	}
	// no_new_privs is per thread: set it on the thread that installs the
	// filter, and TSYNC gives it to the others.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: setting no_new_privs: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// unsafe: the kernel copies the program during the call.
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("seccomp: installing the filter: %w", errno)
	}
	if r != 0 {
		// TSYNC reports the thread it could not move to the new filter.
		return fmt.Errorf("seccomp: thread %d has a filter of its own; none installed", r)
	}
	return nil
}
