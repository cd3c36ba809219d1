package net

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// iovecs is an iovec array kept from one readv or writev to the next:
// x/sys/unix's Readv and Writev allocate a new one on every call, which
// here is every frame.
type iovecs []unix.Iovec

// set lays bufs out, leaving out the empty ones.
func (v *iovecs) set(bufs [][]byte) {
	*v = (*v)[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		iov := unix.Iovec{Base: &b[0]}
		iov.SetLen(len(b))
		*v = append(*v, iov)
	}
}

// readv and writev are the system calls on fd with the iovecs as set.
func (v iovecs) readv(fd uintptr) (int, error) { return v.rw(unix.SYS_READV, fd) }

func (v iovecs) writev(fd uintptr) (int, error) { return v.rw(unix.SYS_WRITEV, fd) }

func (v iovecs) rw(trap, fd uintptr) (int, error) {
	n, _, errno := unix.Syscall(trap, fd, uintptr(unsafe.Pointer(unsafe.SliceData(v))), uintptr(len(v)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
