// Package boot loads a Linux kernel, its initrd and its command line into
// guest memory and describes the state the boot CPU must start in. It
// understands two formats: an x86-64 bzImage, entered through the Linux
// 64-bit boot protocol, and an uncompressed ELF vmlinux, entered through
// the PVH boot protocol. It never sees KVM: the machine copies the
// returned Entry onto its vCPU.
//
// The kernel image is treated as untrusted input: every header field is
// checked before it is used, sizes are computed with overflow checks, and
// everything the image asks for must fit in the RAM the caller's E820 map
// describes. All checks happen before the first byte is written to guest
// memory, so a rejected image leaves it untouched; only an I/O error
// while copying can leave it partly written.
package boot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strings"

	"github.com/gvmm-dev/gvmm/memory"
)

// E820Type is the type of an E820 memory map entry
// (arch/x86/include/asm/e820/types.h; the PVH memory map uses the same values).
type E820Type uint32

// E820 entry types.
const (
	E820RAM      E820Type = 1
	E820Reserved E820Type = 2
	E820ACPI     E820Type = 3
	E820NVS      E820Type = 4
)

// E820Entry is one range of the machine's physical memory map.
type E820Entry struct {
	Addr, Size uint64
	Type       E820Type
}

// maxE820Entries is the capacity of boot_params.e820_table
// (E820_MAX_ENTRIES_ZEROPAGE); the PVH memory map area is sized to match.
const maxE820Entries = 128

// Config describes what to boot.
type Config struct {
	// Kernel is a bzImage or an ELF vmlinux, told apart by its magic.
	Kernel     io.ReaderAt
	KernelSize int64
	// Initrd is optional: a zero InitrdSize means none.
	Initrd     io.ReaderAt
	InitrdSize int64
	// Cmdline is the kernel command line, without a terminating NUL.
	Cmdline string
	// E820 is the machine's memory map: sorted, non-overlapping ranges,
	// each RAM range inside a single region of the guest memory. The
	// kernel, the initrd and everything else the loader places go into
	// its RAM ranges, and it is handed to the kernel as is.
	E820 []E820Entry
	// RSDP is the guest address of the ACPI RSDP, or 0 for none.
	RSDP memory.GuestAddress
}

// Errors callers can branch on with errors.Is. Malformed images are
// reported as *FormatError (or debug/elf's *elf.FormatError for ELF
// headers debug/elf rejects).
var (
	// ErrNotKernel: the image is neither a bzImage nor an ELF file.
	ErrNotKernel = errors.New("not a bzImage or ELF kernel")
	// ErrUnsupported: a well-formed kernel this loader cannot start (boot
	// protocol too old, no 64-bit entry, no PVH note, not x86-64).
	ErrUnsupported = errors.New("unsupported kernel")
	// ErrTooLarge: the kernel's load or runtime footprint is not inside
	// guest RAM above 1 MiB.
	ErrTooLarge = errors.New("kernel larger than memory")
	// ErrInitrdTooLarge: no RAM range can hold the initrd below the
	// kernel's limit without overlapping the kernel.
	ErrInitrdTooLarge = errors.New("initrd does not fit")
	// ErrCmdlineTooLong: the command line exceeds what the kernel or the
	// command-line area accepts.
	ErrCmdlineTooLong = errors.New("command line too long")
	// ErrBadMemoryMap: Config.E820 is empty, unsorted, overlapping, too
	// long or describes RAM the guest memory does not back.
	ErrBadMemoryMap = errors.New("invalid E820 memory map")
)

// FormatError reports a malformed kernel image, like debug/elf's.
type FormatError struct {
	Off int64 // offset in the image where the problem was found
	Msg string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("malformed kernel image at offset %#x: %s", e.Off, e.Msg)
}

var elfMagic = []byte("\x7fELF")

// Load validates cfg, writes the kernel, initrd, command line and boot
// structures into mem and returns the boot CPU's initial state.
func Load(mem *memory.Memory, cfg Config) (*Entry, error) {
	e, err := load(mem, cfg)
	if err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	return e, nil
}

func load(mem *memory.Memory, cfg Config) (*Entry, error) {
	if mem == nil {
		return nil, errors.New("no guest memory")
	}
	if cfg.Kernel == nil || cfg.KernelSize <= 0 {
		return nil, fmt.Errorf("%w: empty kernel image", ErrNotKernel)
	}
	if cfg.InitrdSize < 0 || (cfg.InitrdSize > 0 && cfg.Initrd == nil) {
		return nil, fmt.Errorf("initrd: size %d without a readable image", cfg.InitrdSize)
	}
	// The kernel reads the command line as a C string: an embedded NUL
	// would silently cut it short.
	if strings.IndexByte(cfg.Cmdline, 0) >= 0 {
		return nil, errors.New("command line contains a NUL byte")
	}
	if len(cfg.Cmdline) >= CmdlineMax {
		return nil, fmt.Errorf("%w: %d bytes, the command-line area holds %d", ErrCmdlineTooLong, len(cfg.Cmdline), CmdlineMax-1)
	}
	if err := validateE820(mem, cfg.E820); err != nil {
		return nil, err
	}
	kernel := io.NewSectionReader(cfg.Kernel, 0, cfg.KernelSize)
	var magic [4]byte
	if _, err := kernel.ReadAt(magic[:], 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading kernel: %w", err)
	}
	if bytes.Equal(magic[:], elfMagic) {
		return loadPVH(mem, kernel, cfg)
	}
	return loadBzImage(mem, kernel, cfg)
}

// span is the half-open guest-physical range [start, end).
type span struct{ start, end uint64 }

// newSpan returns [start, start+size) and false if it wraps.
func newSpan(start, size uint64) (span, bool) {
	end, carry := bits.Add64(start, size, 0)
	return span{start, end}, carry == 0
}

func (s span) size() uint64            { return s.end - s.start }
func (s span) overlaps(o span) bool    { return s.start < o.end && o.start < s.end }
func (s span) within(o span) bool      { return o.start <= s.start && s.end <= o.end }
func (s span) String() string          { return fmt.Sprintf("[%#x, %#x)", s.start, s.end) }
func (e E820Entry) span() (span, bool) { return newSpan(e.Addr, e.Size) }
func alignDown(v, align uint64) uint64 { return v &^ (align - 1) }
func isPowerOfTwo(v uint64) bool       { return v != 0 && v&(v-1) == 0 }

// alignUp rounds v up to a power-of-two align and reports overflow.
func alignUp(v, align uint64) (uint64, bool) {
	sum, carry := bits.Add64(v, align-1, 0)
	return alignDown(sum, align), carry == 0
}

// inRAM reports whether one RAM entry holds all of s.
func inRAM(e820 []E820Entry, s span) bool {
	for _, e := range e820 {
		if r, _ := e.span(); e.Type == E820RAM && s.within(r) {
			return true
		}
	}
	return false
}

// validateE820 checks what the loader relies on: placement decisions
// are made against the map, and every RAM range must be addressable
// through mem.Slice so that a placement inside one never fails to write.
func validateE820(mem *memory.Memory, e820 []E820Entry) error {
	if len(e820) == 0 || len(e820) > maxE820Entries {
		return fmt.Errorf("%w: %d entries, want 1 to %d", ErrBadMemoryMap, len(e820), maxE820Entries)
	}
	var prevEnd uint64
	haveRAM := false
	for i, e := range e820 {
		s, ok := e.span()
		if !ok || e.Size == 0 {
			return fmt.Errorf("%w: entry %d [%#x, +%#x) is empty or wraps", ErrBadMemoryMap, i, e.Addr, e.Size)
		}
		if i > 0 && s.start < prevEnd {
			return fmt.Errorf("%w: entry %d at %#x is unsorted or overlaps the previous one", ErrBadMemoryMap, i, e.Addr)
		}
		prevEnd = s.end
		if e.Type != E820RAM {
			continue
		}
		haveRAM = true
		if _, err := mem.Slice(memory.GuestAddress(e.Addr), e.Size); err != nil {
			return fmt.Errorf("%w: RAM entry %d %v is not backed by one guest memory region: %w", ErrBadMemoryMap, i, s, err)
		}
	}
	if !haveRAM {
		return fmt.Errorf("%w: no RAM", ErrBadMemoryMap)
	}
	return nil
}

// placeInitrd returns the highest page-aligned address at which size
// bytes fit in a RAM entry, at or above HighMemStart, ending at or below
// limit and clear of the kernel's footprint. Top of RAM is where Linux
// expects it and keeps it away from the kernel's early allocations.
func placeInitrd(e820 []E820Entry, size, limit uint64, kernel span) (uint64, error) {
	for i := len(e820) - 1; i >= 0; i-- {
		r, _ := e820[i].span()
		if e820[i].Type != E820RAM {
			continue
		}
		w := span{max(r.start, HighMemStart), min(r.end, limit)}
		// Above the kernel first, then below it.
		for _, c := range []span{{max(w.start, kernel.end), w.end}, {w.start, min(w.end, kernel.start)}} {
			if c.end <= c.start || c.size() < size {
				continue
			}
			if addr := alignDown(c.end-size, pageSize); addr >= c.start {
				return addr, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: %d bytes below %#x outside the kernel %v", ErrInitrdTooLarge, size, limit, kernel)
}

// loadInitrd copies the initrd, if any, to addr.
func loadInitrd(mem *memory.Memory, cfg Config, addr uint64) error {
	if cfg.InitrdSize == 0 {
		return nil
	}
	dst, err := mem.Slice(memory.GuestAddress(addr), uint64(cfg.InitrdSize))
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	if _, err := io.ReadFull(io.NewSectionReader(cfg.Initrd, 0, cfg.InitrdSize), dst); err != nil {
		return fmt.Errorf("reading initrd: %w", err)
	}
	return nil
}

// writeCmdline writes the NUL-terminated command line at CmdlineAddr.
func writeCmdline(mem *memory.Memory, cmdline string) error {
	return mem.WriteAt(append([]byte(cmdline), 0), CmdlineAddr)
}
