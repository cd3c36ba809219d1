package memory

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RAMAlign is where guest RAM starts in the VMM's address space. KVM maps
// guest memory with 2 MiB pages (in NPT/EPT or shadow page tables) only
// where the host address and the guest address agree modulo 2 MiB, and
// transparent huge pages back only aligned 2 MiB ranges; QEMU aligns its
// RAM the same way. Unaligned, a boot took 7,000 more page-fault exits.
const RAMAlign = 2 << 20

// MapRAM maps size bytes of private anonymous memory at a RAMAlign-aligned
// address, without reserving swap for it: pages are backed as they are
// touched. unmap releases it.
func MapRAM(size uint64) (data []byte, unmap func() error, err error) {
	if size == 0 || size%uint64(unix.Getpagesize()) != 0 || size > 1<<47 {
		return nil, nil, fmt.Errorf("memory: mapping %d bytes of RAM: size not a positive multiple of the page size", size)
	}
	total := uintptr(size) + RAMAlign
	p, err := unix.MmapPtr(-1, 0, nil, total, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, nil, fmt.Errorf("memory: mapping %d MiB of RAM: %w", size>>20, err)
	}
	// Over-map by RAMAlign, then give back the slack on either side.
	head := (RAMAlign - uintptr(p)%RAMAlign) % RAMAlign
	start := unsafe.Add(p, head)
	if head > 0 {
		if err := unix.MunmapPtr(p, head); err != nil {
			_ = unix.MunmapPtr(p, total)
			return nil, nil, fmt.Errorf("memory: trimming RAM mapping: %w", err)
		}
	}
	if tail := total - head - uintptr(size); tail > 0 {
		if err := unix.MunmapPtr(unsafe.Add(start, size), tail); err != nil {
			_ = unix.MunmapPtr(start, total-head)
			return nil, nil, fmt.Errorf("memory: trimming RAM mapping: %w", err)
		}
	}
	// The mapping is not Go memory: it lives until unmap, whatever the GC
	// does, and the slice only aliases it.
	data = unsafe.Slice((*byte)(start), size)
	return data, func() error { return unix.MunmapPtr(start, uintptr(size)) }, nil
}

// MapFile maps size bytes of f from offset off privately (copy-on-write)
// at a RAMAlign-aligned address: the guest reads the file's pages through
// the page cache, shared with every other mapping of the file, and its
// writes go to private copies, never to the file. Nothing is read until
// the guest touches it. f may be closed once MapFile returns; the mapping
// keeps the file. unmap releases it.
func MapFile(f *os.File, off int64, size uint64) (data []byte, unmap func() error, err error) {
	if off < 0 || off%int64(unix.Getpagesize()) != 0 {
		return nil, nil, fmt.Errorf("memory: mapping %s at offset %d: not page-aligned", f.Name(), off)
	}
	data, unmap, err = MapRAM(size)
	if err != nil {
		return nil, nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = unmap()
		return nil, nil, fmt.Errorf("memory: mapping %s: %w", f.Name(), err)
	}
	var merr error
	cerr := rc.Control(func(fd uintptr) {
		// MAP_FIXED over the aligned anonymous reservation MapRAM made,
		// which unmap releases whatever backs it.
		_, merr = unix.MmapPtr(int(fd), off, unsafe.Pointer(unsafe.SliceData(data)), uintptr(size),
			unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED|unix.MAP_NORESERVE)
	})
	if err := errors.Join(cerr, merr); err != nil {
		_ = unmap()
		return nil, nil, fmt.Errorf("memory: mapping %s: %w", f.Name(), err)
	}
	return data, unmap, nil
}
