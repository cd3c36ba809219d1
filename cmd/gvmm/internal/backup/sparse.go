package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// chunk is the unit of reads, writes and progress reports.
const chunk = 1 << 20

var zeros [chunk]byte

// Copied is what a copy or a hash saw of a file.
type Copied struct {
	Size   int64  // bytes, holes included
	Data   int64  // bytes in data extents: what a sparse copy stores
	SHA256 string // hex, of all Size bytes
}

// extents calls fn for each data extent of f in [0, size) in order, as
// SEEK_DATA and SEEK_HOLE report them; a file system without them
// reports one extent, the whole file, and so does a block device.
func extents(f *os.File, size int64, fn func(off, n int64) error) error {
	for off := int64(0); off < size; {
		data, err := f.Seek(off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			return nil // only a hole from off to the end
		case errors.Is(err, unix.EINVAL):
			return fn(off, size-off) // a block device, say: all data
		case err != nil:
			return fmt.Errorf("SEEK_DATA: %w", err)
		}
		if data >= size {
			return nil
		}
		hole, err := f.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("SEEK_HOLE: %w", err)
		}
		hole = min(hole, size)
		if err := fn(data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// hashZeros adds n zero bytes to h, if not nil.
func hashZeros(h hash.Hash, n int64) {
	for h != nil && n > 0 {
		k := min(n, chunk)
		h.Write(zeros[:k])
		n -= k
	}
}

// sparseWalk reads the size bytes of src extent by extent, hashing all of
// them (holes as zeros) into h unless it is nil, and hands each data chunk
// to data (nil: none). progress, if not nil, gets the bytes covered after
// each chunk or hole. It stops with ctx's error when ctx is done.
func sparseWalk(ctx context.Context, src *os.File, size int64, h hash.Hash, data func(p []byte, off int64) error, progress func(int64)) (Copied, error) {
	c := Copied{Size: size}
	buf := make([]byte, chunk)
	pos := int64(0) // hashed up to here
	report := func(n int64) {
		if progress != nil {
			progress(n)
		}
	}
	err := extents(src, size, func(off, n int64) error {
		hashZeros(h, off-pos)
		report(off - pos)
		for end := off + n; off < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := min(end-off, chunk)
			if _, err := src.ReadAt(buf[:k], off); err != nil {
				if errors.Is(err, io.EOF) {
					return fmt.Errorf("%s shrank while being read", src.Name())
				}
				return err
			}
			if h != nil {
				h.Write(buf[:k])
			}
			if data != nil {
				if err := data(buf[:k], off); err != nil {
					return err
				}
			}
			c.Data += k
			off += k
			report(k)
		}
		pos = off
		return nil
	})
	if err != nil {
		return Copied{}, err
	}
	hashZeros(h, size-pos)
	report(size - pos)
	if h != nil {
		c.SHA256 = fmt.Sprintf("%x", h.Sum(nil))
	}
	return c, nil
}

// CopySparse copies the first size bytes of src into dst, which must be
// empty: data extents are written, holes are left as holes (dst ends up
// size bytes long), and the SHA-256 is computed over what was read, so a
// file changed between a check and the copy cannot slip through. dst is
// synced.
func CopySparse(ctx context.Context, dst, src *os.File, size int64, progress func(int64)) (Copied, error) {
	return copySparse(ctx, dst, src, size, sha256.New(), progress)
}

// copySparse is CopySparse hashing into h, or not at all if h is nil.
func copySparse(ctx context.Context, dst, src *os.File, size int64, h hash.Hash, progress func(int64)) (Copied, error) {
	c, err := sparseWalk(ctx, src, size, h, func(p []byte, off int64) error {
		if bytes.Equal(p, zeros[:len(p)]) {
			return nil // allocated zeros: a hole reads the same
		}
		_, err := dst.WriteAt(p, off)
		return err
	}, progress)
	if err != nil {
		return Copied{}, err
	}
	if err := dst.Truncate(size); err != nil {
		return Copied{}, err
	}
	if err := dst.Sync(); err != nil {
		return Copied{}, err
	}
	return c, nil
}

// HashFile hashes the file at path, reading only its data extents.
func HashFile(ctx context.Context, path string, progress func(int64)) (Copied, error) {
	f, err := os.Open(path)
	if err != nil {
		return Copied{}, err
	}
	defer f.Close()
	return Hash(ctx, f, progress)
}

// Hash hashes the open file f, reading only its data extents.
func Hash(ctx context.Context, f *os.File, progress func(int64)) (Copied, error) {
	size, err := f.Seek(0, io.SeekEnd) // also sizes block devices
	if err != nil {
		return Copied{}, err
	}
	return sparseWalk(ctx, f, size, sha256.New(), nil, progress)
}
