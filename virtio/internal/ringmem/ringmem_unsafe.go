package ringmem

import (
	"sync/atomic"
	"unsafe"
)

// aligned reports whether b starts on a 4-byte boundary in host memory.
func aligned(b []byte) bool {
	// unsafe: the address is only inspected, never dereferenced.
	return len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))&3 == 0
}

// word returns the aligned 32-bit word at b[off:off+4].
func word(b []byte, off int) *uint32 {
	w := b[off : off+4] // bounds check, without a read the race detector would see
	// unsafe: off is 4-aligned within a slice Window checked to be 4-aligned,
	// so the pointer is a valid, aligned *uint32 into guest memory.
	return (*uint32)(unsafe.Pointer(&w[0]))
}

func load32(b []byte, off int) uint32 { return atomic.LoadUint32(word(b, off)) }

func cas32(b []byte, off int, old, v uint32) bool {
	return atomic.CompareAndSwapUint32(word(b, off), old, v)
}
