// Package payload builds tiny guest kernels for the integration tests:
// a few bytes of machine code that gvmm boots through the PVH entry,
// where a Linux guest would take seconds to reach the same point.
package payload

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// Entry is where a payload is loaded and entered.
const Entry = 0x200000

// PVH wraps 32-bit code in the smallest ELF gvmm boots: one PT_LOAD
// segment of 4 KiB at Entry, zero past the code, and a PT_NOTE with
// XEN_ELFNOTE_PHYS32_ENTRY. The code runs as PVH starts it: 32-bit
// protected mode, flat segments, paging and interrupts off.
func PVH(code []byte) []byte {
	const (
		ehdrSize  = 64
		phdrSize  = 56
		noteOff   = ehdrSize + 2*phdrSize
		codeOff   = 0x1000
		segSize   = 0x1000
		xenPhys32 = 18 // XEN_ELFNOTE_PHYS32_ENTRY
	)
	if len(code) > segSize {
		panic("payload: code larger than its 4 KiB segment")
	}
	var note bytes.Buffer
	for _, v := range []uint32{4, 4, xenPhys32} { // namesz, descsz, type
		_ = binary.Write(&note, binary.LittleEndian, v)
	}
	note.WriteString("Xen\x00")
	_ = binary.Write(&note, binary.LittleEndian, uint32(Entry))

	var f bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Entry: Entry, Phoff: ehdrSize, Ehsize: ehdrSize, Phentsize: phdrSize, Phnum: 2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	progs := []elf.Prog64{
		{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Off: codeOff,
			Vaddr: Entry, Paddr: Entry, Filesz: segSize, Memsz: segSize, Align: 0x1000},
		{Type: uint32(elf.PT_NOTE), Flags: uint32(elf.PF_R), Off: noteOff,
			Filesz: uint64(note.Len()), Memsz: uint64(note.Len()), Align: 4},
	}
	_ = binary.Write(&f, binary.LittleEndian, hdr)
	_ = binary.Write(&f, binary.LittleEndian, progs)
	f.Write(note.Bytes())
	f.Write(make([]byte, codeOff-f.Len()))
	seg := make([]byte, segSize)
	copy(seg, code)
	f.Write(seg)
	return f.Bytes()
}
