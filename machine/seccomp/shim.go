package seccomp

import "golang.org/x/sys/unix"

// Shim is the allow-list of containerd-shim-gvmm-v1 once its container's
// VM runs: VMM, Shares (the container's root file system is a 9p
// share) and Nets (a pod's network), with what the shim adds to a VMM until it exits after Delete
// and Shutdown. Its ttrpc server, the events it sends containerd (a unix
// socket it dials), containerd's FIFOs (openat through /proc/self/fd)
// and the removal of its files need no more than VMM and Shares; the
// rest is below. It was derived from the code of the shim and of
// containerd's shim library, and checked by running containerd's task
// life cycle under the filter, which found the getcwd below.
//
// Not listed, among others: mount (the first root is mounted before the
// VM starts, a pod's later ones by the pod's mounter, a process the shim
// starts before its filter), execve and fork (the shim's start and
// delete modes are processes of their own, started by containerd).
func Shim() []Rule {
	rules := append(append(VMM(), Shares()...), Nets()...)
	return append(rules,
		// A pod network's teardown removes the ingress qdisc of the
		// namespace's interface through a netlink socket opened in the
		// namespace before the filter (sockets other than unix ones
		// cannot be made under it).
		Rule{Syscall: unix.SYS_SENDTO},
		Rule{Syscall: unix.SYS_RECVFROM},
		// Delete unmounts the root file system: containerd's
		// mount.UnmountAll(rootfs, 0), umount2 without flags until the
		// mount point is none.
		Rule{Syscall: unix.SYS_UMOUNT2, Args: []Arg{{Index: 1, Mask: ^uint32(0), Value: 0}}},
		// UnmountAll first asks statfs whether the mount is FUSE, to
		// unmount it with fusermount, a new process. Failing statfs makes
		// it use umount2 at once, which a root shim may do on FUSE too.
		Rule{Syscall: unix.SYS_STATFS, Errno: unix.ENOSYS},
		// On its way out, after Shutdown, the shim library reads its
		// socket's address from the bundle's file "address" to remove
		// the socket, through filepath.Abs: getcwd, as the shim's $PWD
		// is containerd's, not the bundle it runs in.
		Rule{Syscall: unix.SYS_GETCWD},
		// The shim library's reaper calls wait4(-1, WNOHANG) on every
		// SIGCHLD, which anyone may send; a process that cannot fork
		// only learns it has no child.
		Rule{Syscall: unix.SYS_WAIT4},
	)
}
