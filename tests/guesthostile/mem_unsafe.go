package main

import "unsafe"

// String I/O and exact-width memory accesses in io_amd64.s.
func repIns(port uint16, size int, buf unsafe.Pointer, count int)
func load8(addr uintptr) uint8
func load16(addr uintptr) uint16
func load32(addr uintptr) uint32
func load64(addr uintptr) uint64
func store8(addr uintptr, v uint8)
func store16(addr uintptr, v uint16)
func store32(addr uintptr, v uint32)
func store64(addr uintptr, v uint64)

// repInsBuf fills buf from port with elements of size bytes.
func repInsBuf(port uint16, size int, buf []byte) {
	repIns(port, size, unsafe.Pointer(unsafe.SliceData(buf)), len(buf)/size) // buf outlives the call
}

// window is a mapping of device registers or physical memory, accessed at
// exact widths so that each access is one MMIO exit of that size.
type window struct {
	b []byte
}

func (w window) addr(off uint64, size int) uintptr {
	if off+uint64(size) > uint64(len(w.b)) {
		panic("window access out of range")
	}
	// The mapping is not Go memory: the address stays valid while mapped.
	return uintptr(unsafe.Pointer(unsafe.SliceData(w.b))) + uintptr(off)
}

func (w window) read(off uint64, size int) uint64 {
	a := w.addr(off, size)
	switch size {
	case 1:
		return uint64(load8(a))
	case 2:
		return uint64(load16(a))
	case 4:
		return uint64(load32(a))
	}
	return load64(a)
}

func (w window) write(off uint64, size int, v uint64) {
	a := w.addr(off, size)
	switch size {
	case 1:
		store8(a, uint8(v))
	case 2:
		store16(a, uint16(v))
	case 4:
		store32(a, uint32(v))
	default:
		store64(a, v)
	}
}

// sliceAddr is the virtual address of b's first byte, for
// /proc/self/pagemap; b must be a mapping that does not move.
func sliceAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
