// Package kernelcache keeps the ELF kernels decompressed from bzImages.
//
// A bzImage carries its kernel compressed, with a decompressor that runs
// in the guest at every boot: a few hundred milliseconds on hardware,
// seconds under emulation. The same kernel as an ELF vmlinux boots
// through its PVH entry with nothing to decompress, as Firecracker's
// users boot theirs. The cache decompresses each bzImage once, names the
// result by the bzImage's SHA-256, so that a changed image is never
// confused with its predecessor, and hands out the ELF file from then on.
// A bzImage whose kernel has no PVH entry is remembered as such and
// boots as a bzImage.
package kernelcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/u-root/u-root/pkg/boot/bzimage"

	"github.com/gvmm-dev/gvmm/boot"
)

// Cache is a folder of decompressed kernels.
type Cache struct{ dir string }

// New returns the cache in dir, created at the first kernel it keeps.
func New(dir string) Cache { return Cache{dir: dir} }

// UserDir is the user's cache inside os.UserCacheDir.
const UserDir = "gvmm/kernels"

// Default returns the user's cache: UserDir in os.UserCacheDir
// ($XDG_CACHE_HOME, else ~/.cache).
func Default() (Cache, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return Cache{}, fmt.Errorf("kernelcache: %w", err)
	}
	return New(filepath.Join(d, UserDir)), nil
}

// Dir is the cache's folder.
func (c Cache) Dir() string { return c.dir }

// maxImage bounds the bzImage read into memory to decompress: distribution
// kernels are 8-15 MiB.
const maxImage = 256 << 20

// Kernel returns the path of the ELF kernel to boot in place of the
// kernel image at path, decompressing it into the cache the first time,
// or "" when the image is to be booted as it is: it is not a bzImage,
// or its kernel has no PVH entry.
func (c Cache) Kernel(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("kernelcache: %w", err)
	}
	defer f.Close()
	if !isBzImage(f) {
		return "", nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("kernelcache: reading %s: %w", path, err)
	}
	key := hex.EncodeToString(h.Sum(nil))
	elf, noPVH := filepath.Join(c.dir, key+".vmlinux"), filepath.Join(c.dir, key+".nopvh")
	if _, err := os.Stat(elf); err == nil {
		return elf, nil
	}
	if _, err := os.Stat(noPVH); err == nil {
		return "", nil
	}
	vmlinux, err := decompress(f)
	if err != nil {
		return "", fmt.Errorf("kernelcache: %s: %w", path, err)
	}
	// The compressed image, its copy and the kernel are tens of MiB
	// of heap that a long-running VMM would otherwise keep for minutes.
	defer debug.FreeOSMemory()
	if err := boot.CheckPVH(bytes.NewReader(vmlinux), int64(len(vmlinux))); err != nil {
		if !errors.Is(err, boot.ErrUnsupported) {
			return "", fmt.Errorf("kernelcache: the kernel inside %s: %w", path, err)
		}
		return "", c.store(noPVH, nil)
	}
	if err := c.store(elf, vmlinux); err != nil {
		return "", err
	}
	return elf, nil
}

// isBzImage reports whether f starts with a bzImage's setup header.
func isBzImage(f *os.File) bool {
	var hdr [4]byte
	_, err := f.ReadAt(hdr[:], 0x202)
	return err == nil && string(hdr[:]) == "HdrS"
}

// decompress returns the ELF kernel inside the bzImage f.
func decompress(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxImage {
		return nil, fmt.Errorf("%d bytes, larger than a kernel (%d)", st.Size(), maxImage)
	}
	image := make([]byte, st.Size())
	if _, err := f.ReadAt(image, 0); err != nil {
		return nil, err
	}
	var bz bzimage.BzImage
	if err := bz.UnmarshalBinary(image); err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	return bz.KernelCode, nil
}

// store writes data to path through a temporary file renamed into place,
// so that a reader, or another gvmm filling the cache at the same time,
// never sees part of a kernel.
func (c Cache) store(path string, data []byte) error {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fmt.Errorf("kernelcache: %w", err)
	}
	tmp, err := os.CreateTemp(c.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("kernelcache: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("kernelcache: %w", err)
	}
	return nil
}
