package main

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/guestblk/pattern"
)

// verifyPattern reads the first size bytes of a disk with O_DIRECT, so
// from the device rather than the page cache, and returns the offset of
// the first byte that is not the pattern for seed, or -1.
func verifyPattern(path string, seed uint64, size int64) (int64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s O_DIRECT: %w", path, err)
	}
	defer unix.Close(fd)
	buf, err := unix.Mmap(-1, 0, mib, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(buf)
	for off := int64(0); off < size; off += mib {
		n := min(mib, size-off)
		got, err := unix.Pread(fd, buf[:n], off)
		if err != nil {
			return 0, fmt.Errorf("read %s at %d: %w", path, off, err)
		}
		if int64(got) != n {
			return 0, fmt.Errorf("read %s at %d: %d of %d bytes", path, off, got, n)
		}
		if at := pattern.Mismatch(buf[:n], seed, off); at >= 0 {
			return off + at, nil
		}
	}
	return -1, nil
}
