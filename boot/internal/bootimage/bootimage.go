// Package bootimage builds synthetic kernel images for the tests of the
// boot packages: ELF files with PVH notes, small enough for fuzz seeds.
package bootimage

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// Seg is one program header of a synthetic ELF and its file bytes.
type Seg struct {
	Typ   elf.ProgType
	Paddr uint64
	Data  []byte
	Memsz uint64 // 0: len(Data)
}

// The default synthetic vmlinux: small code at 2 MiB with a bss, its PVH
// entry inside it.
const (
	Load     = 0x200000
	Entry    = Load + 0x10
	CodeSize = 0x100 // bytes in the file
	BSSSize  = 0x100
)

// pvhNoteType is XEN_ELFNOTE_PHYS32_ENTRY.
const pvhNoteType = 18

// Code is the default vmlinux's code: no zero bytes, so that a loader
// that drops some is seen.
func Code() []byte {
	code := make([]byte, CodeSize)
	for i := range code {
		code[i] = byte(i%253) + 1
	}
	return code
}

// Note encodes one ELF note.
func Note(name string, typ uint32, desc []byte) []byte {
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

// PVHNote is the note giving a kernel's PVH entry as an 8-byte address.
func PVHNote(entry uint64) []byte {
	return Note("Xen", pvhNoteType, binary.LittleEndian.AppendUint64(nil, entry))
}

// Segs are the default vmlinux's: a loadable segment, and a note segment
// with an unrelated note before the PVH one.
func Segs() []Seg {
	notes := append(Note("GNU", 3, make([]byte, 20)), PVHNote(Entry)...)
	return []Seg{
		{Typ: elf.PT_LOAD, Paddr: Load, Data: Code(), Memsz: CodeSize + BSSSize},
		{Typ: elf.PT_NOTE, Data: notes},
	}
}

// ELF builds a little-endian x86-64 ET_EXEC with the given segments;
// mutators edit the header before it is encoded.
func ELF(segs []Seg, mutators ...func(*elf.Header64)) []byte {
	const ehsize, phsize = 64, 56
	h := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Entry: Load, Phoff: ehsize, Ehsize: ehsize, Phentsize: phsize, Phnum: uint16(len(segs)), Shentsize: 64,
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
		memsz := s.Memsz
		if memsz == 0 {
			memsz = uint64(len(s.Data))
		}
		_ = binary.Write(&out, le, elf.Prog64{
			Type: uint32(s.Typ), Off: off + uint64(data.Len()), Paddr: s.Paddr, Vaddr: s.Paddr,
			Filesz: uint64(len(s.Data)), Memsz: memsz, Align: 4,
		})
		data.Write(s.Data)
		for data.Len()%16 != 0 {
			data.WriteByte(0)
		}
	}
	out.Write(data.Bytes())
	return out.Bytes()
}
