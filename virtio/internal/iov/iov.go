// Package iov turns virtqueue buffers into the host memory behind them,
// for preadv, pwritev, readv and writev straight between a file and
// guest memory, with no copy of our own.
package iov

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// Max is the kernel's limit on iovecs per call (IOV_MAX).
const Max = 1024

// Append resolves bufs to guest memory, one slice per buffer appended to
// iovs, and returns them with their total length. Empty buffers are left
// out: an empty iovec would read as the end of the file.
func Append(iovs [][]byte, mem *memory.Memory, bufs []queue.Buffer) ([][]byte, int, error) {
	total := 0
	for _, b := range bufs {
		if b.Len == 0 {
			continue
		}
		s, err := mem.Slice(b.Addr, uint64(b.Len))
		if err != nil {
			return iovs, 0, err
		}
		iovs = append(iovs, s)
		total += len(s)
	}
	return iovs, total, nil
}

// Advance drops the first n bytes from iovs.
func Advance(iovs [][]byte, n int) [][]byte {
	for n > 0 && n >= len(iovs[0]) {
		n -= len(iovs[0])
		iovs = iovs[1:]
	}
	if n > 0 {
		iovs[0] = iovs[0][n:]
	}
	return iovs
}

// Limit keeps the first n bytes of iovs.
func Limit(iovs [][]byte, n int) [][]byte {
	for i, s := range iovs {
		if n <= len(s) {
			if n == 0 {
				return iovs[:i]
			}
			iovs[i] = s[:n]
			return iovs[:i+1]
		}
		n -= len(s)
	}
	return iovs
}

// TransferAt runs op (unix.Preadv or unix.Pwritev) between fd at off and
// iovs, Max iovecs a call, until every byte moved or op moved none (the
// end of the file), and returns the bytes moved. EINTR is retried.
func TransferAt(op func(int, [][]byte, int64) (int, error), fd int, iovs [][]byte, off int64) (int, error) {
	total := 0
	for len(iovs) > 0 {
		n, err := op(fd, iovs[:min(len(iovs), Max)], off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
		total += n
		off += int64(n)
		iovs = Advance(iovs, n)
	}
	return total, nil
}
