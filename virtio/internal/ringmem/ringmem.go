// Package ringmem gives the virtqueue code and its test driver atomic
// access to the 16-bit ring fields (idx, flags, used_event, avail_event)
// that a guest and the device share. sync/atomic has no 16-bit operations,
// so each access goes through the naturally aligned 32-bit word that
// contains the field; Window makes sure that word is inside the slice.
package ringmem

import (
	"encoding/binary"
	"fmt"

	"github.com/gvmm-dev/gvmm/memory"
)

// Window returns guest memory covering [addr, addr+n) widened to 4-byte
// boundaries, and the offset of addr inside it. The widening lets every
// 16-bit field be accessed through its containing aligned word. It fails
// if the widened range is not in guest memory or not 4-byte aligned in
// host memory (which only a machine with oddly placed regions produces).
func Window(mem *memory.Memory, addr memory.GuestAddress, n uint64) ([]byte, int, error) {
	start := addr &^ 3
	end := uint64(addr) + n
	if end < uint64(addr) || end > ^uint64(0)-3 {
		return nil, 0, fmt.Errorf("ring [%#x,+%#x): %w", uint64(addr), n, memory.ErrOutOfRange)
	}
	end = (end + 3) &^ 3
	b, err := mem.Slice(start, end-uint64(start))
	if err != nil {
		return nil, 0, err
	}
	if !aligned(b) {
		return nil, 0, fmt.Errorf("ring at %#x is not 4-byte aligned in host memory", uint64(addr))
	}
	return b, int(addr - start), nil
}

// Load16 atomically loads the little-endian uint16 at b[off:off+2].
func Load16(b []byte, off int) uint16 {
	var w [4]byte
	binary.NativeEndian.PutUint32(w[:], load32(b, off&^3))
	return binary.LittleEndian.Uint16(w[off&3:])
}

// Store16 atomically stores v as a little-endian uint16 at b[off:off+2],
// leaving the other half of the containing word as it is even if the
// guest writes it concurrently. The compare-and-swap is also the full
// barrier that orders the store before any later ring read.
func Store16(b []byte, off int, v uint16) {
	for {
		old := load32(b, off&^3)
		var w [4]byte
		binary.NativeEndian.PutUint32(w[:], old)
		binary.LittleEndian.PutUint16(w[off&3:], v)
		if cas32(b, off&^3, old, binary.NativeEndian.Uint32(w[:])) {
			return
		}
	}
}
