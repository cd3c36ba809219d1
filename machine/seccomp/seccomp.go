// Package seccomp confines a process to an allow-list of system calls: a
// classic BPF seccomp filter, built here from a list of Rules, installed
// on every thread of the process at once (SECCOMP_FILTER_FLAG_TSYNC, so
// the threads the Go runtime has already started are covered too).
//
// A call the list does not allow never runs: the kernel sends the thread
// SIGSYS, and a handler of this package (in assembly: it must not depend
// on the Go runtime, which may be holding its own locks at that moment)
// writes one log line naming the call to stderr and ends the process with
// status 1:
//
//	level=ERROR msg="seccomp: system call not allowed; exiting" syscall=socket nr=41
//
// The Go runtime cannot do this itself: it turns a seccomp SIGSYS into a
// dump of every goroutine with the call only as a number in a register or
// a frame, and os/signal never sees such a signal. SECCOMP_RET_KILL_PROCESS says nothing at all
// (the kernel's audit log aside), and failing the call with EPERM lets
// the caller carry on or crash somewhere unrelated.
//
// Only x86-64 is supported; the filter kills a process that makes a
// system call through another ABI (i386 or x32).
package seccomp

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// Arg is a condition on one argument of a call: the argument's low 32
// bits, masked with Mask, must equal Value. The high bits are not looked
// at: every argument checked here is an int or a flag word the kernel
// truncates to 32 bits.
type Arg struct {
	Index int // 0 to 5
	Mask  uint32
	Value uint32
}

// Rule allows one system call. A call may have several rules with
// Args, each an alternative: it is allowed when the Args of any hold.
type Rule struct {
	Syscall int // its x86-64 number: unix.SYS_*
	// Args must all hold for the call to be allowed; a call that breaks
	// one (of every rule of the call) is denied as if it were not listed.
	Args []Arg
	// Errno, when non-zero, makes the call fail with it without running:
	// for calls a library tries first and falls back from on ENOSYS.
	Errno unix.Errno
}

// ExitStatus is the status the process ends with on a denied call, as on
// any other VMM fault.
const ExitStatus = 1

// Offsets in struct seccomp_data (include/uapi/linux/seccomp.h).
const (
	dataNr      = 0
	dataArch    = 4
	dataArgs    = 16 // six __u64; the low half first on little-endian
	maxArgs     = 6
	x32Bit      = 0x40000000 // __X32_SYSCALL_BIT
	maxSyscall  = 1023       // well above the highest x86-64 number
	maxJump     = 255        // a conditional jump's offset is a byte
	maxFilterSz = 4096       // BPF_MAXINSNS
)

// Errors Build returns for a list it cannot compile.
var (
	ErrBadRule = errors.New("seccomp: invalid rule")
	ErrTooLong = errors.New("seccomp: filter too long")
)

// Build compiles rules into a filter program. Calls not in rules get
// SECCOMP_RET_TRAP (the SIGSYS that Install's handler reports); calls
// from another architecture or the x32 ABI kill the process.
//
// The program checks the architecture, then compares the call number
// with each rule in order, so the most frequent calls should come first;
// kernels since 5.11 skip the filter entirely for calls it allows
// whatever their arguments.
func Build(rules []Rule) ([]unix.SockFilter, error) {
	var order []int
	byCall := map[int][]Rule{}
	for _, r := range rules {
		if r.Syscall < 0 || r.Syscall > maxSyscall {
			return nil, fmt.Errorf("%w: system call number %d", ErrBadRule, r.Syscall)
		}
		if r.Errno != 0 && len(r.Args) > 0 {
			return nil, fmt.Errorf("%w: %s has both an errno and argument checks", ErrBadRule, SyscallName(r.Syscall))
		}
		if prev := byCall[r.Syscall]; len(prev) > 0 && (len(r.Args) == 0 || len(prev[0].Args) == 0) {
			return nil, fmt.Errorf("%w: %s listed twice", ErrBadRule, SyscallName(r.Syscall))
		}
		if byCall[r.Syscall] == nil {
			order = append(order, r.Syscall)
		}
		byCall[r.Syscall] = append(byCall[r.Syscall], r)
	}
	prog := []unix.SockFilter{
		load(dataArch),
		jeq(unix.AUDIT_ARCH_X86_64, 1, 0),
		ret(unix.SECCOMP_RET_KILL_PROCESS),
		load(dataNr),
		jge(x32Bit, 0, 1),
		ret(unix.SECCOMP_RET_KILL_PROCESS),
	}
	for _, nr := range order {
		body, err := callBody(byCall[nr])
		if err != nil {
			return nil, err
		}
		// Not this call: skip its body, which always returns.
		prog = append(prog, jeq(uint32(nr), 0, uint8(len(body))))
		prog = append(prog, body...)
	}
	prog = append(prog, ret(unix.SECCOMP_RET_TRAP))
	if len(prog) > maxFilterSz {
		return nil, fmt.Errorf("%w: %d instructions, at most %d", ErrTooLong, len(prog), maxFilterSz)
	}
	return prog, nil
}

// callBody is what runs once the call number matched: each rule's
// argument checks, a failed one going on to the next rule, then the
// action; after the last rule, the trap. It ends in a return on every
// path.
func callBody(rules []Rule) ([]unix.SockFilter, error) {
	r := rules[0]
	if r.Errno != 0 {
		return []unix.SockFilter{ret(unix.SECCOMP_RET_ERRNO | uint32(r.Errno)&unix.SECCOMP_RET_DATA)}, nil
	}
	var body []unix.SockFilter
	for _, r := range rules {
		alt, err := ruleChecks(r)
		if err != nil {
			return nil, err
		}
		body = append(body, alt...)
	}
	body = append(body, ret(unix.SECCOMP_RET_TRAP))
	if len(body) > maxJump {
		return nil, fmt.Errorf("%w: %s has too many argument checks", ErrTooLong, SyscallName(r.Syscall))
	}
	return body, nil
}

// ruleChecks are one rule's argument checks and the allow that follows
// them; a failed check jumps past the allow, to the next rule or the
// trap.
func ruleChecks(r Rule) ([]unix.SockFilter, error) {
	var body []unix.SockFilter
	for _, a := range r.Args {
		if a.Index < 0 || a.Index >= maxArgs {
			return nil, fmt.Errorf("%w: %s: argument %d", ErrBadRule, SyscallName(r.Syscall), a.Index)
		}
		if a.Value&^a.Mask != 0 {
			return nil, fmt.Errorf("%w: %s: argument %d can never equal %#x under mask %#x", ErrBadRule, SyscallName(r.Syscall), a.Index, a.Value, a.Mask)
		}
		body = append(body, load(uint32(dataArgs+8*a.Index)))
		if a.Mask != ^uint32(0) {
			body = append(body, and(a.Mask))
		}
		body = append(body, jeq(a.Value, 0, 0)) // jf patched below to the trap
	}
	body = append(body, ret(unix.SECCOMP_RET_ALLOW))
	next := len(body)
	for i := range body {
		if body[i].Code == unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K {
			off := next - i - 1
			if off > maxJump {
				return nil, fmt.Errorf("%w: %s has too many argument checks", ErrTooLong, SyscallName(r.Syscall))
			}
			body[i].Jf = uint8(off)
		}
	}
	return body, nil
}

func load(off uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off}
}

func and(k uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: k}
}

func jeq(k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k, Jt: jt, Jf: jf}
}

func jge(k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, K: k, Jt: jt, Jf: jf}
}

func ret(k uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: k}
}

//go:generate go run gen_names.go

// SyscallName is the x86-64 system call's name, or its number when it
// has none.
func SyscallName(nr int) string {
	if nr >= 0 && nr < len(syscallNames) && syscallNames[nr] != "" {
		return syscallNames[nr]
	}
	return "syscall_" + strconv.Itoa(nr)
}
