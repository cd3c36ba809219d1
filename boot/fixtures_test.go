package boot

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
)

const testMemSize = 16 << 20

// newTestMemory returns one zeroed region of size bytes at address 0.
func newTestMemory(t testing.TB, size int) *memory.Memory {
	t.Helper()
	mem, err := memory.New(memory.Region{Base: 0, Data: make([]byte, size)})
	require.NoError(t, err)
	return mem
}

// pcE820 is the usual PC map: low RAM, the EBDA/BIOS hole, RAM from 1 MiB.
func pcE820(size uint64) []E820Entry {
	return []E820Entry{
		{Addr: 0, Size: EBDAStart, Type: E820RAM},
		{Addr: EBDAStart, Size: HighMemStart - EBDAStart, Type: E820Reserved},
		{Addr: HighMemStart, Size: size - HighMemStart, Type: E820RAM},
	}
}

// Synthetic bzImage: 4 setup sectors, a 256-byte protected-mode kernel, a
// relocatable 2.15 header whose runtime area is [2 MiB, 3 MiB).
const (
	testSetupSects = 4
	testSyssize    = 0x10
	testPrefAddr   = 0x200000
	testInitSize   = 0x100000
	testCmdlineMax = 255
)

// makeBzImage builds the synthetic bzImage; mutators edit its bytes.
func makeBzImage(mutators ...func(b []byte)) []byte {
	setup := (testSetupSects + 1) * sectorSize
	b := make([]byte, setup+testSyssize*16)
	le := binary.LittleEndian
	b[hdrSetupSects] = testSetupSects
	le.PutUint32(b[hdrSyssize:], testSyssize)
	le.PutUint16(b[hdrBootFlag:], bootFlagMagic)
	b[hdrJump], b[hdrJump+1] = jmpShort, 0x6a // header ends at 0x26c, as in Linux 6.1
	le.PutUint32(b[hdrHeader:], headerMagic)
	le.PutUint16(b[hdrVersion:], 0x020f)
	b[hdrLoadflags] = loadedHigh
	le.PutUint32(b[hdrCode32Start:], HighMemStart)
	le.PutUint32(b[hdrInitrdAddrMax:], 0x7fffffff)
	le.PutUint32(b[hdrKernelAlignment:], 0x200000)
	b[hdrRelocatableKernel] = 1
	le.PutUint16(b[hdrXloadflags:], xlfKernel64)
	le.PutUint32(b[hdrCmdlineSize:], testCmdlineMax)
	le.PutUint64(b[hdrPrefAddress:], testPrefAddr)
	le.PutUint32(b[hdrInitSize:], testInitSize)
	for i := setup; i < len(b); i++ {
		b[i] = byte(i % 251)
	}
	for _, m := range mutators {
		m(b)
	}
	return b
}

func put16(off int, v uint16) func([]byte) {
	return func(b []byte) { binary.LittleEndian.PutUint16(b[off:], v) }
}

func put32(off int, v uint32) func([]byte) {
	return func(b []byte) { binary.LittleEndian.PutUint32(b[off:], v) }
}

func put64(off int, v uint64) func([]byte) {
	return func(b []byte) { binary.LittleEndian.PutUint64(b[off:], v) }
}

func put8(off int, v byte) func([]byte) { return func(b []byte) { b[off] = v } }
