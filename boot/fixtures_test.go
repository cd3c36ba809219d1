package boot

import (
	"bytes"
	"debug/elf"
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

// elfSeg is one program header of a synthetic ELF and its file bytes.
type elfSeg struct {
	typ   elf.ProgType
	paddr uint64
	data  []byte
	memsz uint64 // 0: len(data)
}

// Synthetic vmlinux: small code at 2 MiB with a bss, PVH entry inside
// it. Seeds stay small so the fuzzer minimizes quickly.
const (
	testELFLoad  = 0x200000
	testELFEntry = testELFLoad + 0x10
	testELFCode  = 0x100 // bytes in the file
	testELFBSS   = 0x100
)

func testELFCodeBytes() []byte {
	code := make([]byte, testELFCode)
	for i := range code {
		code[i] = byte(i%253) + 1
	}
	return code
}

// elfNote encodes one ELF note.
func elfNote(name string, typ uint32, desc []byte) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	_ = binary.Write(&b, le, [3]uint32{uint32(len(name) + 1), uint32(len(desc)), typ})
	b.WriteString(name + "\x00")
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(desc)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	return b.Bytes()
}

func pvhNote(entry uint64) []byte {
	return elfNote("Xen", xenElfnotePhys32, binary.LittleEndian.AppendUint64(nil, entry))
}

// defaultELFSegs is a loadable segment and a note segment with an
// unrelated note before the PVH one.
func defaultELFSegs() []elfSeg {
	notes := append(elfNote("GNU", 3, make([]byte, 20)), pvhNote(testELFEntry)...)
	return []elfSeg{
		{typ: elf.PT_LOAD, paddr: testELFLoad, data: testELFCodeBytes(), memsz: testELFCode + testELFBSS},
		{typ: elf.PT_NOTE, data: notes},
	}
}

// makeELF builds a little-endian x86-64 ET_EXEC with the given segments;
// mutators edit the header before it is encoded.
func makeELF(segs []elfSeg, mutators ...func(*elf.Header64)) []byte {
	const ehsize, phsize = 64, 56
	h := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Entry: testELFLoad, Phoff: ehsize, Ehsize: ehsize, Phentsize: phsize, Phnum: uint16(len(segs)), Shentsize: 64,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	for _, m := range mutators {
		m(&h)
	}
	var out bytes.Buffer
	le := binary.LittleEndian
	_ = binary.Write(&out, le, h)
	off := uint64(ehsize + phsize*len(segs))
	var data bytes.Buffer
	for _, s := range segs {
		memsz := s.memsz
		if memsz == 0 {
			memsz = uint64(len(s.data))
		}
		_ = binary.Write(&out, le, elf.Prog64{
			Type: uint32(s.typ), Off: off + uint64(data.Len()), Paddr: s.paddr, Vaddr: s.paddr,
			Filesz: uint64(len(s.data)), Memsz: memsz, Align: 4,
		})
		data.Write(s.data)
		for data.Len()%16 != 0 {
			data.WriteByte(0)
		}
	}
	out.Write(data.Bytes())
	return out.Bytes()
}
