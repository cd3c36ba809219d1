package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/gvmm-dev/gvmm/memory"
)

// Mode is the CPU mode the kernel is entered in.
type Mode uint8

const (
	// Long64 is 64-bit long mode with paging on: the bzImage 64-bit entry.
	Long64 Mode = iota + 1
	// Protected32 is 32-bit protected mode with paging off: the PVH entry.
	Protected32
)

func (m Mode) String() string {
	switch m {
	case Long64:
		return "long64"
	case Protected32:
		return "protected32"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Table is a descriptor-table register (GDTR) value.
type Table struct {
	Base  uint64
	Limit uint16
}

// Segment is a segment register including its hidden descriptor cache,
// field for field what KVM's struct kvm_segment holds, so the machine
// copies it 1:1 (with unusable = 0).
type Segment struct {
	Base     uint64
	Limit    uint32 // in bytes, already scaled by G as in kvm_segment
	Selector uint16
	Type     uint8 // 4-bit descriptor type
	Present  bool
	DPL      uint8
	DB       bool // default operation size 32-bit
	S        bool // code/data (true) or system (false) descriptor
	L        bool // 64-bit code
	G        bool // limit counts 4 KiB pages
}

// Entry is the KVM-agnostic initial state of the boot CPU. General
// registers not listed are zero; the LDT is unusable; interrupts are off.
type Entry struct {
	Mode                       Mode
	RIP, RSP, RSI, RBX, RFLAGS uint64
	CR0, CR3, CR4, EFER        uint64
	GDT                        Table
	CS, DS, ES, FS, GS, SS, TR Segment
}

// Control-register and EFER bits (Intel SDM Vol. 3A 2.5, 2.2.1).
const (
	cr0PE   = 1 << 0
	cr0ET   = 1 << 4 // hardwired to 1 on every CPU since the 486; stated so the value matches what the guest reads back
	cr0PG   = 1 << 31
	cr4PAE  = 1 << 5
	eferLME = 1 << 8
	eferLMA = 1 << 10
	// rflagsFixed is RFLAGS bit 1, which always reads as 1; IF is clear.
	rflagsFixed = 1 << 1
)

// Selectors: boot.rst requires __BOOT_CS = 0x10 and __BOOT_DS = 0x18.
const (
	codeSelector = 0x10
	dataSelector = 0x18
	tssSelector  = 0x20
)

// Descriptor types (SDM Vol. 3A 3.4.5.1, 3.5), accessed bit set because
// VM entry requires it for CS and the CPU would set it anyway.
const (
	typeCodeExecReadAccessed  = 0xb
	typeDataReadWriteAccessed = 0x3
	typeTSSBusy               = 0xb
)

// Page-table entry bits (SDM Vol. 3A 4.5).
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	ptePageSize = 1 << 7 // 2 MiB page in a page-directory entry
)

// flatCode returns the 4 GiB code segment for mode: 64-bit (L=1, D=0)
// for long mode, 32-bit (D=1) for protected mode.
func flatCode(mode Mode) Segment {
	return Segment{
		Limit: 0xffffffff, Selector: codeSelector, Type: typeCodeExecReadAccessed,
		Present: true, S: true, G: true, L: mode == Long64, DB: mode == Protected32,
	}
}

// flatData returns the 4 GiB read/write data segment.
func flatData() Segment {
	return Segment{
		Limit: 0xffffffff, Selector: dataSelector, Type: typeDataReadWriteAccessed,
		Present: true, S: true, G: true, DB: true,
	}
}

// bootTSS is the task register the PVH ABI specifies (base 0, limit
// 0x67); VM entry needs a usable busy TSS in long mode as well.
func bootTSS() Segment {
	return Segment{Limit: 0x67, Selector: tssSelector, Type: typeTSSBusy, Present: true}
}

// descriptor encodes s as an 8-byte segment descriptor (SDM Vol. 3A
// 3.4.5). For a system descriptor in long mode this is the low half; the
// high half holds base bits 63:32.
func (s Segment) descriptor() uint64 {
	limit := uint64(s.Limit)
	if s.G {
		limit >>= 12
	}
	access := uint64(s.Type&0xf) | uint64(s.DPL&3)<<5
	if s.S {
		access |= 1 << 4
	}
	if s.Present {
		access |= 1 << 7
	}
	var flags uint64
	if s.L {
		flags |= 1 << 1
	}
	if s.DB {
		flags |= 1 << 2
	}
	if s.G {
		flags |= 1 << 3
	}
	return limit&0xffff |
		(s.Base&0xffffff)<<16 |
		access<<40 |
		(limit>>16&0xf)<<48 |
		flags<<52 |
		(s.Base>>24&0xff)<<56
}

// newEntry returns the flat segments, GDT and RFLAGS common to both
// entries, and writes the matching GDT so that the descriptor caches
// agree with memory should the kernel reload a selector before
// installing its own GDT.
func newEntry(mem *memory.Memory, mode Mode) (*Entry, error) {
	code, data, tss := flatCode(mode), flatData(), bootTSS()
	gdt := make([]byte, gdtSize)
	for i, d := range []uint64{0, 0, code.descriptor(), data.descriptor(), tss.descriptor(), tss.Base >> 32} {
		binary.LittleEndian.PutUint64(gdt[i*8:], d)
	}
	if err := mem.WriteAt(gdt, GDTAddr); err != nil {
		return nil, fmt.Errorf("writing GDT: %w", err)
	}
	return &Entry{
		Mode:   mode,
		RSP:    BootStackTop,
		RFLAGS: rflagsFixed,
		GDT:    Table{Base: GDTAddr, Limit: gdtSize - 1},
		CS:     code,
		DS:     data, ES: data, FS: data, GS: data, SS: data,
		TR: tss,
	}, nil
}

// writePageTables identity-maps the first 4 GiB with 2 MiB pages: one
// PML4 entry, four PDPT entries, four full page directories. 1 GiB pages
// would be shorter but are an optional CPU feature.
func writePageTables(mem *memory.Memory) error {
	pml4 := make([]byte, pageSize)
	binary.LittleEndian.PutUint64(pml4, PDPTAddr|ptePresent|pteWritable)
	pdpt := make([]byte, pageSize)
	pds := make([]byte, numPD*pageSize)
	for i := range numPD {
		binary.LittleEndian.PutUint64(pdpt[i*8:], uint64(PDAddr+i*pageSize)|ptePresent|pteWritable)
	}
	for i := range numPD * 512 {
		binary.LittleEndian.PutUint64(pds[i*8:], uint64(i)<<21|ptePresent|pteWritable|ptePageSize)
	}
	for _, t := range []struct {
		addr memory.GuestAddress
		data []byte
	}{{PML4Addr, pml4}, {PDPTAddr, pdpt}, {PDAddr, pds}} {
		if err := mem.WriteAt(t.data, t.addr); err != nil {
			return fmt.Errorf("writing page tables: %w", err)
		}
	}
	return nil
}
