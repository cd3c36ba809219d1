package seccomp

import (
	"golang.org/x/sys/unix"
)

// VMM is the allow-list of a running gvmm: what its machines, the control
// API and the Go runtime call once a machine is set up and until the
// process exits, including a guest reboot with RebootRestart, which
// builds the whole VM again. It was derived from the code and from
// tracing gvmm runs (strace -f) with static and cgo builds.
//
// Not listed, among others: bind, socket other than AF_UNIX, execve, fork (clone
// without CLONE_THREAD), ptrace, mount, mapping memory executable, and
// ioctls other than KVM's and a terminal's modes (TIOCSTI, which types
// into a terminal, is refused).
func VMM() []Rule {
	pid := uint32(unix.Getpid())
	noExec := Arg{Index: 2, Mask: unix.PROT_EXEC, Value: 0}
	thisProcess := Arg{Index: 0, Mask: ^uint32(0), Value: pid}
	return []Rule{
		// vCPUs (KVM_RUN) and every other KVM call: all of type KVMIO.
		{Syscall: unix.SYS_IOCTL, Args: []Arg{{Index: 1, Mask: 0xff00, Value: kvmIO << 8}}},
		// The terminal's modes: raw while the VMM runs, restored at exit.
		ioctl(unix.TCGETS),
		ioctl(unix.TCSETS),
		// The Go runtime's scheduler, timers and network poller.
		{Syscall: unix.SYS_FUTEX},
		{Syscall: unix.SYS_EPOLL_PWAIT},
		{Syscall: unix.SYS_EPOLL_CTL},
		{Syscall: unix.SYS_EPOLL_CREATE1}, // the poller starts on its first use
		{Syscall: unix.SYS_NANOSLEEP},
		{Syscall: unix.SYS_SCHED_YIELD},
		{Syscall: unix.SYS_RESTART_SYSCALL}, // a sleep or futex wait interrupted by a signal
		{Syscall: unix.SYS_CLOCK_GETTIME},   // the vDSO falls back to these when the
		{Syscall: unix.SYS_GETTIMEOFDAY},    // clock source cannot be read in user space
		{Syscall: unix.SYS_SCHED_GETAFFINITY},
		{Syscall: unix.SYS_GETRANDOM},
		// The runtime names the memory it maps, where the kernel has
		// CONFIG_ANON_VMA_NAME (it gives up after the first EINVAL).
		{Syscall: unix.SYS_PRCTL, Args: []Arg{{Index: 0, Mask: ^uint32(0), Value: unix.PR_SET_VMA}}},
		// Files: eventfds (ioeventfd, irqfd), disk images, the console,
		// the API's connections, logs, /proc/self/status for the
		// balloon's statistics, /proc/self/smaps_rollup and the threads'
		// stat files for GET /metrics; kernel, initrd and /dev/kvm on a
		// reboot.
		{Syscall: unix.SYS_READ},
		{Syscall: unix.SYS_WRITE},
		{Syscall: unix.SYS_PREAD64},
		{Syscall: unix.SYS_PWRITE64},
		{Syscall: unix.SYS_PREADV},
		{Syscall: unix.SYS_PWRITEV},
		{Syscall: unix.SYS_FDATASYNC},
		{Syscall: unix.SYS_FSYNC},
		{Syscall: unix.SYS_FALLOCATE}, // discard and write zeroes
		{Syscall: unix.SYS_FLOCK},
		{Syscall: unix.SYS_LSEEK},
		{Syscall: unix.SYS_OPENAT},
		{Syscall: unix.SYS_CLOSE},
		{Syscall: unix.SYS_FSTAT},
		{Syscall: unix.SYS_NEWFSTATAT},
		{Syscall: unix.SYS_FCNTL},
		{Syscall: unix.SYS_EVENTFD2},
		// The control API: connections on the socket made before.
		{Syscall: unix.SYS_ACCEPT4},
		{Syscall: unix.SYS_GETSOCKNAME},
		{Syscall: unix.SYS_GETSOCKOPT},
		{Syscall: unix.SYS_SHUTDOWN},
		{Syscall: unix.SYS_UNLINKAT}, // the socket file, at exit
		// vsock: a guest's connection to the host dials the unix socket
		// PATH_port; host clients come through accept4 above.
		{Syscall: unix.SYS_SOCKET, Args: []Arg{{Index: 0, Mask: ^uint32(0), Value: unix.AF_UNIX}}},
		// vsock: ListenVsock's in-process connections (gvmm exec's stderr).
		{Syscall: unix.SYS_SOCKETPAIR, Args: []Arg{{Index: 0, Mask: ^uint32(0), Value: unix.AF_UNIX}}},
		{Syscall: unix.SYS_CONNECT},
		{Syscall: unix.SYS_GETPEERNAME},
		{Syscall: unix.SYS_RENAMEAT}, // the console log's and vmm.log's rotation, a snapshot's state file
		// vmm.log's rotation points stderr at the new file.
		{Syscall: unix.SYS_DUP3, Args: []Arg{{Index: 1, Mask: ^uint32(0), Value: 2}}},
		// Memory: the Go heap, guest RAM and kvm_run on a reboot, balloon
		// pages given back (MADV_DONTNEED); glibc's allocator and thread
		// stacks in a cgo build. Nothing is ever mapped executable.
		{Syscall: unix.SYS_MMAP, Args: []Arg{noExec}},
		{Syscall: unix.SYS_MUNMAP},
		{Syscall: unix.SYS_MADVISE},
		{Syscall: unix.SYS_MPROTECT, Args: []Arg{noExec}},
		{Syscall: unix.SYS_BRK},
		// Threads: new Ms for the runtime and vCPUs, never a new process.
		{Syscall: unix.SYS_CLONE, Args: []Arg{{Index: 0, Mask: unix.CLONE_THREAD, Value: unix.CLONE_THREAD}}},
		{Syscall: unix.SYS_CLONE3, Errno: unix.ENOSYS}, // glibc's pthread_create falls back to clone
		{Syscall: unix.SYS_SET_ROBUST_LIST},            // glibc, in a new thread
		{Syscall: unix.SYS_RSEQ},                       // glibc, in a new thread
		{Syscall: unix.SYS_GETTID},
		{Syscall: unix.SYS_GETPID},
		{Syscall: unix.SYS_EXIT},
		{Syscall: unix.SYS_EXIT_GROUP},
		// Signals: goroutine preemption and vCPU kicks (SIGURG), SIGINT
		// and SIGTERM, the runtime's own crash path; only to this process.
		{Syscall: unix.SYS_RT_SIGRETURN},
		{Syscall: unix.SYS_RT_SIGPROCMASK},
		{Syscall: unix.SYS_RT_SIGACTION},
		{Syscall: unix.SYS_SIGALTSTACK},
		{Syscall: unix.SYS_TGKILL, Args: []Arg{thisProcess}},
		{Syscall: unix.SYS_KILL, Args: []Arg{thisProcess}},
	}
}

// kvmIO is the type byte of every KVM ioctl request (KVMIO in
// include/uapi/linux/kvm.h); bits 8 to 15 of the request.
const kvmIO = 0xAE

// ioctl allows the ioctl request req, on any descriptor.
func ioctl(req uint32) Rule {
	return Rule{Syscall: unix.SYS_IOCTL, Args: []Arg{{Index: 1, Mask: ^uint32(0), Value: req}}}
}
