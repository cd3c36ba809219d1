package boot

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/gvmm-dev/gvmm/memory"
)

// PVH boot ABI (Xen include/xen/interface/hvm/start_info.h and
// include/xen/interface/elfnote.h).
const (
	pvhMagic           = 0x336ec578 // XEN_HVM_START_MAGIC_VALUE
	pvhVersion         = 1          // the first version with a memory map
	xenElfnotePhys32   = 18         // XEN_ELFNOTE_PHYS32_ENTRY
	xenNoteName        = "Xen\x00"
	elfNoteHeaderSize  = 12 // namesz, descsz, type
	startInfoSize      = 56
	modlistEntrySize   = 32
	memmapEntrySize    = 24
	siMagic            = 0
	siVersion          = 4
	siFlags            = 8
	siNrModules        = 12
	siModlistPaddr     = 16
	siCmdlinePaddr     = 24
	siRSDPPaddr        = 32
	siMemmapPaddr      = 40
	siMemmapEntries    = 48
	modPaddr           = 0
	modSize            = 8
	memmapAddr         = 0
	memmapSize         = 8
	memmapType         = 16
	memmapReserved     = 20
	pvhInitrdLimit     = 1 << 32 // Xen's rule for start-of-day data; the kernel starts without paging
	pvhEntryLimit      = 1 << 32 // the entry is jumped to in 32-bit mode
	elfSegmentMaxCount = 64      // vmlinux has 5; bounds work on hostile headers
)

// elfKernel is what loading an ELF vmlinux needs from its headers.
type elfKernel struct {
	loads     []*elf.Prog
	footprint span // lowest to highest loaded physical address
	entry     uint64
}

// parseELF checks the ELF headers, the PT_LOAD segments against the file
// and guest RAM, and finds the PVH entry; it writes nothing.
func parseELF(kernel *io.SectionReader, e820 []E820Entry) (*elfKernel, error) {
	f, err := elf.NewFile(kernel)
	if err != nil {
		return nil, fmt.Errorf("ELF kernel: %w", err)
	}
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return nil, fmt.Errorf("%w: ELF kernel is %v %v %v %v, want a little-endian 64-bit x86-64 executable", ErrUnsupported, f.Class, f.Data, f.Machine, f.Type)
	}
	if len(f.Progs) > elfSegmentMaxCount {
		return nil, &FormatError{Off: 0, Msg: fmt.Sprintf("%d program headers, at most %d", len(f.Progs), elfSegmentMaxCount)}
	}
	k := &elfKernel{footprint: span{start: ^uint64(0)}}
	for i, p := range f.Progs {
		if p.Type != elf.PT_LOAD && p.Type != elf.PT_NOTE {
			continue
		}
		if p.Filesz > p.Memsz {
			return nil, &FormatError{Off: int64(p.Off), Msg: fmt.Sprintf("segment %d: filesz %#x > memsz %#x", i, p.Filesz, p.Memsz)}
		}
		if data, ok := newSpan(p.Off, p.Filesz); !ok || data.end > uint64(kernel.Size()) {
			return nil, &FormatError{Off: int64(p.Off), Msg: fmt.Sprintf("segment %d: segment past end of file", i)}
		}
		if p.Type == elf.PT_NOTE {
			entry, found, err := findPVHEntry(io.NewSectionReader(kernel, int64(p.Off), int64(p.Filesz)), int64(p.Off))
			if err != nil {
				return nil, err
			}
			if found && k.entry == 0 {
				k.entry = entry
			}
			continue
		}
		if p.Memsz == 0 {
			continue
		}
		s, ok := newSpan(p.Paddr, p.Memsz)
		if !ok || s.start < HighMemStart || !inRAM(e820, s) {
			return nil, fmt.Errorf("%w: ELF segment %d at %#x (+%#x) is not inside guest RAM above 1 MiB", ErrTooLarge, i, p.Paddr, p.Memsz)
		}
		k.loads = append(k.loads, p)
		k.footprint = span{min(k.footprint.start, s.start), max(k.footprint.end, s.end)}
	}
	if k.entry == 0 {
		return nil, fmt.Errorf("%w: ELF kernel has no PVH entry note", ErrUnsupported)
	}
	if len(k.loads) == 0 {
		return nil, &FormatError{Off: 0, Msg: "no loadable segments"}
	}
	for _, p := range k.loads {
		if k.entry >= p.Paddr && k.entry-p.Paddr < p.Filesz {
			return k, nil
		}
	}
	return nil, &FormatError{Off: 0, Msg: fmt.Sprintf("PVH entry %#x is outside the loaded segments", k.entry)}
}

// findPVHEntry scans one note segment (at file offset base) for
// XEN_ELFNOTE_PHYS32_ENTRY, a 4- or 8-byte physical address.
func findPVHEntry(notes *io.SectionReader, base int64) (uint64, bool, error) {
	le := binary.LittleEndian
	var hdr [elfNoteHeaderSize]byte
	for off := uint64(0); off+elfNoteHeaderSize <= uint64(notes.Size()); {
		if _, err := notes.ReadAt(hdr[:], int64(off)); err != nil {
			return 0, false, fmt.Errorf("reading ELF note: %w", err)
		}
		namesz, descsz, typ := uint64(le.Uint32(hdr[0:])), uint64(le.Uint32(hdr[4:])), le.Uint32(hdr[8:])
		nameOff := off + elfNoteHeaderSize
		descOff := nameOff + (namesz+3)&^3 // fields are 4-byte aligned; 32-bit sizes cannot overflow
		next := descOff + (descsz+3)&^3
		if descOff+descsz > uint64(notes.Size()) {
			return 0, false, &FormatError{Off: base + int64(off), Msg: "ELF note runs past its segment"}
		}
		if typ == xenElfnotePhys32 && namesz == uint64(len(xenNoteName)) {
			name := make([]byte, namesz)
			if _, err := notes.ReadAt(name, int64(nameOff)); err != nil {
				return 0, false, fmt.Errorf("reading ELF note: %w", err)
			}
			if string(name) != xenNoteName {
				off = next
				continue
			}
			if descsz != 4 && descsz != 8 {
				return 0, false, &FormatError{Off: base + int64(off), Msg: fmt.Sprintf("PVH entry note has %d-byte address, want 4 or 8", descsz)}
			}
			desc := make([]byte, 8) // a 4-byte address reads as its zero-extension
			if _, err := notes.ReadAt(desc[:descsz], int64(descOff)); err != nil {
				return 0, false, fmt.Errorf("reading ELF note: %w", err)
			}
			entry := le.Uint64(desc)
			if entry == 0 || entry >= pvhEntryLimit {
				return 0, false, &FormatError{Off: base + int64(descOff), Msg: fmt.Sprintf("PVH entry %#x is not a 32-bit address", entry)}
			}
			return entry, true, nil
		}
		off = next
	}
	return 0, false, nil
}

// loadPVH loads an ELF vmlinux for the PVH boot protocol.
func loadPVH(mem *memory.Memory, kernel *io.SectionReader, cfg Config) (*Entry, error) {
	k, err := parseELF(kernel, cfg.E820)
	if err != nil {
		return nil, err
	}
	var initrdAddr uint64
	if cfg.InitrdSize > 0 {
		if initrdAddr, err = placeInitrd(cfg.E820, uint64(cfg.InitrdSize), pvhInitrdLimit, k.footprint); err != nil {
			return nil, err
		}
	}

	for _, p := range k.loads {
		dst, err := mem.Slice(memory.GuestAddress(p.Paddr), p.Memsz)
		if err != nil {
			return nil, fmt.Errorf("kernel segment: %w", err)
		}
		if _, err := io.ReadFull(io.NewSectionReader(kernel, int64(p.Off), int64(p.Filesz)), dst[:p.Filesz]); err != nil {
			return nil, fmt.Errorf("reading kernel segment: %w", err)
		}
		clear(dst[p.Filesz:]) // bss
	}
	if err := loadInitrd(mem, cfg, initrdAddr); err != nil {
		return nil, err
	}
	if err := writeCmdline(mem, cfg.Cmdline); err != nil {
		return nil, fmt.Errorf("writing command line: %w", err)
	}
	if err := writeStartInfo(mem, cfg, initrdAddr); err != nil {
		return nil, fmt.Errorf("writing hvm_start_info: %w", err)
	}
	e, err := newEntry(mem, Protected32)
	if err != nil {
		return nil, err
	}
	e.RIP = k.entry
	e.RBX = PVHStartInfoAddr
	e.CR0 = cr0PE | cr0ET
	return e, nil
}

// writeStartInfo writes hvm_start_info, the module list (the initrd) and
// the memory map.
func writeStartInfo(mem *memory.Memory, cfg Config, initrdAddr uint64) error {
	le := binary.LittleEndian
	si := make([]byte, startInfoSize)
	le.PutUint32(si[siMagic:], pvhMagic)
	le.PutUint32(si[siVersion:], pvhVersion)
	le.PutUint64(si[siCmdlinePaddr:], CmdlineAddr)
	le.PutUint64(si[siRSDPPaddr:], uint64(cfg.RSDP))
	le.PutUint64(si[siMemmapPaddr:], PVHMemmapAddr)
	le.PutUint32(si[siMemmapEntries:], uint32(len(cfg.E820)))
	if cfg.InitrdSize > 0 {
		le.PutUint32(si[siNrModules:], 1)
		le.PutUint64(si[siModlistPaddr:], PVHModlistAddr)
		mod := make([]byte, modlistEntrySize)
		le.PutUint64(mod[modPaddr:], initrdAddr)
		le.PutUint64(mod[modSize:], uint64(cfg.InitrdSize))
		if err := mem.WriteAt(mod, PVHModlistAddr); err != nil {
			return err
		}
	}
	memmap := make([]byte, len(cfg.E820)*memmapEntrySize)
	for i, e := range cfg.E820 {
		putPVHMemmap(memmap[i*memmapEntrySize:], e)
	}
	if err := mem.WriteAt(memmap, PVHMemmapAddr); err != nil {
		return err
	}
	return mem.WriteAt(si, PVHStartInfoAddr)
}

// putPVHMemmap encodes struct hvm_memmap_table_entry.
func putPVHMemmap(dst []byte, e E820Entry) {
	binary.LittleEndian.PutUint64(dst[memmapAddr:], e.Addr)
	binary.LittleEndian.PutUint64(dst[memmapSize:], e.Size)
	binary.LittleEndian.PutUint32(dst[memmapType:], uint32(e.Type))
	binary.LittleEndian.PutUint32(dst[memmapReserved:], 0) // "must be zero"
}

// CheckPVH reports whether kernel, an image of size bytes, is an ELF
// vmlinux this package can boot through its PVH entry, whatever the
// guest's memory: nil, or the error Load would return for it.
func CheckPVH(kernel io.ReaderAt, size int64) error {
	all := []E820Entry{{Addr: 0, Size: math.MaxUint64, Type: E820RAM}}
	if _, err := parseELF(io.NewSectionReader(kernel, 0, size), all); err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	return nil
}
