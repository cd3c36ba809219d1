package main

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// blkRange runs BLKDISCARD or BLKZEROOUT, whose argument points at
// uint64 {start, length} in bytes (linux/fs.h).
func blkRange(fd int, req uintptr, off, n uint64) error {
	r := [2]uint64{off, n}
	// The kernel copies r during the call; r outlives it.
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&r))); errno != 0 {
		return fmt.Errorf("ioctl %#x [%d, +%d): %w", req, off, n, errno)
	}
	return nil
}
