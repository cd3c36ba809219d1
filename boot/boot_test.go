package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/boot/internal/bootimage"
	"github.com/gvmm-dev/gvmm/memory"
)

func bytesConfig(kernel, initrd []byte, cmdline string) Config {
	return Config{
		Kernel: bytes.NewReader(kernel), KernelSize: int64(len(kernel)),
		Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
		Cmdline: cmdline,
		E820:    pcE820(testMemSize),
		RSDP:    0xf0000,
	}
}

func readGuest(t *testing.T, mem *memory.Memory, addr memory.GuestAddress, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	require.NoError(t, mem.ReadAt(b, addr))
	return b
}

func TestLoadBzImage(t *testing.T) {
	mem := newTestMemory(t, testMemSize)
	image := makeBzImage(put64(hdrSetupData, 0xdead000)) // must not reach the kernel
	initrd := bytes.Repeat([]byte{0xa5}, 0x1800)
	const cmdline = "console=ttyS0 root=/dev/vda"

	e, err := Load(mem, bytesConfig(image, initrd, cmdline))
	require.NoError(t, err)

	assert.Equal(t, Long64, e.Mode)
	assert.Equal(t, uint64(0x100200), e.RIP)
	assert.Equal(t, uint64(BootParamsAddr), e.RSI)
	assert.Equal(t, uint64(BootStackTop), e.RSP)
	assert.Equal(t, uint64(0x2), e.RFLAGS)
	assert.Equal(t, uint64(0x80000011), e.CR0)
	assert.Equal(t, uint64(PML4Addr), e.CR3)
	assert.Equal(t, uint64(0x20), e.CR4)
	assert.Equal(t, uint64(0x500), e.EFER)
	assert.Equal(t, uint16(0x10), e.CS.Selector)
	assert.True(t, e.CS.L)
	assert.False(t, e.CS.DB)
	for _, s := range []Segment{e.DS, e.ES, e.FS, e.GS, e.SS} {
		assert.Equal(t, uint16(0x18), s.Selector)
	}

	setup := (testSetupSects + 1) * sectorSize
	assert.Equal(t, image[setup:], readGuest(t, mem, HighMemStart, testSyssize*16), "protected-mode kernel at 1 MiB")
	assert.Equal(t, cmdline+"\x00", string(readGuest(t, mem, CmdlineAddr, len(cmdline)+1)))

	bp := readGuest(t, mem, BootParamsAddr, bootParamsSize)
	le := binary.LittleEndian
	assert.Equal(t, image[bpSetupHeader:hdrTypeOfLoader], bp[bpSetupHeader:hdrTypeOfLoader], "setup header copied")
	assert.Equal(t, uint16(0x020f), le.Uint16(bp[hdrVersion:]))
	assert.Equal(t, byte(0xff), bp[hdrTypeOfLoader])
	assert.Equal(t, byte(loadedHigh|canUseHeap), bp[hdrLoadflags])
	assert.Equal(t, uint16(0xde00), le.Uint16(bp[hdrHeapEndPtr:]))
	assert.Equal(t, uint32(CmdlineAddr), le.Uint32(bp[hdrCmdLinePtr:]))
	assert.Equal(t, uint32(0), le.Uint32(bp[bpExtCmdLinePtr:]))
	assert.Equal(t, uint64(0), le.Uint64(bp[hdrSetupData:]))
	assert.Equal(t, uint64(0xf0000), le.Uint64(bp[bpACPIRSDPAddr:]))

	initrdAddr := le.Uint32(bp[hdrRamdiskImage:])
	assert.Equal(t, uint32(testMemSize-0x2000), initrdAddr, "highest page-aligned address")
	assert.Equal(t, uint32(len(initrd)), le.Uint32(bp[hdrRamdiskSize:]))
	assert.Equal(t, initrd, readGuest(t, mem, memory.GuestAddress(initrdAddr), len(initrd)))

	require.Equal(t, byte(3), bp[bpE820Entries])
	for i, want := range pcE820(testMemSize) {
		ent := bp[bpE820Table+i*e820EntrySize:]
		assert.Equal(t, want, E820Entry{Addr: le.Uint64(ent), Size: le.Uint64(ent[8:]), Type: E820Type(le.Uint32(ent[16:]))})
	}
}

func TestInitrdPlacement(t *testing.T) {
	const size = 0x1800 // not a page multiple: the address must still be aligned
	tests := []struct {
		name  string
		image []byte
		e820  []E820Entry
		want  uint64
	}{
		{"top of RAM", makeBzImage(), pcE820(testMemSize), testMemSize - 0x2000},
		{"below initrd_addr_max", makeBzImage(put32(hdrInitrdAddrMax, 0x7fffff)), pcE820(testMemSize), 0x800000 - 0x2000},
		{"above-4G kernel ignores initrd_addr_max", makeBzImage(put32(hdrInitrdAddrMax, 0x7fffff), put16(hdrXloadflags, xlfKernel64|xlfAbove4G)), pcE820(testMemSize), testMemSize - 0x2000},
		{"top of a lower RAM range when the top range is too small",
			makeBzImage(),
			[]E820Entry{{0, EBDAStart, E820RAM}, {HighMemStart, 0x800000, E820RAM}, {0xc00000, 0x1000, E820RAM}},
			HighMemStart + 0x800000 - 0x2000},
		{"ELF: below the kernel when nothing above",
			bootimage.ELF(bootimage.Segs()),
			[]E820Entry{{0, EBDAStart, E820RAM}, {HighMemStart, bootimage.Load + 0x2000 - HighMemStart, E820RAM}},
			bootimage.Load - 0x2000},
		{"ELF: top of RAM", bootimage.ELF(bootimage.Segs()), pcE820(testMemSize), testMemSize - 0x2000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := newTestMemory(t, testMemSize)
			cfg := bytesConfig(tt.image, make([]byte, size), "")
			cfg.E820 = tt.e820
			e, err := Load(mem, cfg)
			require.NoError(t, err)
			got := initrdAddr(t, mem, e)
			assert.Equal(t, tt.want, got)
			assert.Zero(t, got%pageSize)
		})
	}
}

// initrdAddr reads back where the loader told the kernel the initrd is.
func initrdAddr(t *testing.T, mem *memory.Memory, e *Entry) uint64 {
	t.Helper()
	if e.Mode == Protected32 {
		v, err := mem.Uint64(PVHModlistAddr + modPaddr)
		require.NoError(t, err)
		return v
	}
	lo, err := mem.Uint32(BootParamsAddr + hdrRamdiskImage)
	require.NoError(t, err)
	hi, err := mem.Uint32(BootParamsAddr + bpExtRamdiskImage)
	require.NoError(t, err)
	return uint64(hi)<<32 | uint64(lo)
}

func TestLoadPVH(t *testing.T) {
	mem := newTestMemory(t, testMemSize)
	// Stale bytes where the bss goes must be cleared.
	bss, err := mem.Slice(bootimage.Load+bootimage.CodeSize, bootimage.BSSSize)
	require.NoError(t, err)
	for i := range bss {
		bss[i] = 0xff
	}
	initrd := bytes.Repeat([]byte{0x5a}, 0x3000)
	const cmdline = "console=hvc0"

	e, err := Load(mem, bytesConfig(bootimage.ELF(bootimage.Segs()), initrd, cmdline))
	require.NoError(t, err)

	assert.Equal(t, Protected32, e.Mode)
	assert.Equal(t, uint64(bootimage.Entry), e.RIP)
	assert.Equal(t, uint64(PVHStartInfoAddr), e.RBX)
	assert.Equal(t, uint64(0x11), e.CR0, "PE (and the hardwired ET), no paging")
	assert.Zero(t, e.CR3)
	assert.Zero(t, e.CR4)
	assert.Zero(t, e.EFER)
	assert.True(t, e.CS.DB)
	assert.False(t, e.CS.L)
	assert.Equal(t, uint32(0xffffffff), e.CS.Limit)
	assert.Equal(t, uint32(0x67), e.TR.Limit)

	assert.Equal(t, bootimage.Code(), readGuest(t, mem, bootimage.Load, bootimage.CodeSize))
	assert.Equal(t, make([]byte, bootimage.BSSSize), readGuest(t, mem, bootimage.Load+bootimage.CodeSize, bootimage.BSSSize))
	assert.Equal(t, cmdline+"\x00", string(readGuest(t, mem, CmdlineAddr, len(cmdline)+1)))

	le := binary.LittleEndian
	si := readGuest(t, mem, PVHStartInfoAddr, startInfoSize)
	assert.Equal(t, uint32(0x336ec578), le.Uint32(si[siMagic:]))
	assert.Equal(t, uint32(1), le.Uint32(si[siVersion:]))
	assert.Equal(t, uint32(0), le.Uint32(si[siFlags:]))
	assert.Equal(t, uint32(1), le.Uint32(si[siNrModules:]))
	assert.Equal(t, uint64(PVHModlistAddr), le.Uint64(si[siModlistPaddr:]))
	assert.Equal(t, uint64(CmdlineAddr), le.Uint64(si[siCmdlinePaddr:]))
	assert.Equal(t, uint64(0xf0000), le.Uint64(si[siRSDPPaddr:]))
	assert.Equal(t, uint64(PVHMemmapAddr), le.Uint64(si[siMemmapPaddr:]))
	assert.Equal(t, uint32(3), le.Uint32(si[siMemmapEntries:]))

	addr := initrdAddr(t, mem, e)
	assert.Equal(t, uint64(testMemSize-0x3000), addr)
	assert.Equal(t, uint64(len(initrd)), le.Uint64(readGuest(t, mem, PVHModlistAddr+modSize, 8)))
	assert.Equal(t, initrd, readGuest(t, mem, memory.GuestAddress(addr), len(initrd)))

	for i, want := range pcE820(testMemSize) {
		ent := readGuest(t, mem, memory.GuestAddress(PVHMemmapAddr+i*memmapEntrySize), memmapEntrySize)
		assert.Equal(t, want, E820Entry{Addr: le.Uint64(ent), Size: le.Uint64(ent[8:]), Type: E820Type(le.Uint32(ent[16:]))})
		assert.Zero(t, le.Uint32(ent[20:]), "reserved")
	}
}

func TestLoadPVHWithoutInitrd(t *testing.T) {
	mem := newTestMemory(t, testMemSize)
	_, err := Load(mem, bytesConfig(bootimage.ELF(bootimage.Segs()), nil, ""))
	require.NoError(t, err)
	si := readGuest(t, mem, PVHStartInfoAddr, startInfoSize)
	assert.Zero(t, binary.LittleEndian.Uint32(si[siNrModules:]))
	assert.Zero(t, binary.LittleEndian.Uint64(si[siModlistPaddr:]), "0 means absent")
}

func TestPVHNoteForms(t *testing.T) {
	tests := []struct {
		name  string
		notes []byte
	}{
		{"8-byte address", bootimage.PVHNote(bootimage.Entry)},
		{"4-byte address", bootimage.Note("Xen", xenElfnotePhys32, binary.LittleEndian.AppendUint32(nil, bootimage.Entry))},
		{"after other Xen notes", append(bootimage.Note("Xen", 6, []byte("linux\x00")), bootimage.PVHNote(bootimage.Entry)...)},
		{"first of two", append(bootimage.PVHNote(bootimage.Entry), bootimage.PVHNote(bootimage.Entry+4)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			segs := bootimage.Segs()
			segs[1].Data = tt.notes
			e, err := Load(newTestMemory(t, testMemSize), bytesConfig(bootimage.ELF(segs), nil, ""))
			require.NoError(t, err)
			assert.Equal(t, uint64(bootimage.Entry), e.RIP)
		})
	}
}

func withSegs(mut func([]bootimage.Seg) []bootimage.Seg) []byte {
	return bootimage.ELF(mut(bootimage.Segs()))
}

func TestLoadErrors(t *testing.T) {
	tooManyE820 := make([]E820Entry, maxE820Entries+1)
	for i := range tooManyE820 {
		tooManyE820[i] = E820Entry{Addr: uint64(i) * pageSize, Size: pageSize, Type: E820RAM}
	}
	tests := []struct {
		name    string
		kernel  []byte
		cfg     func(*Config)
		wantIs  error // sentinel, or nil
		wantFmt bool  // a *FormatError
		wantMsg string
		partial bool // an I/O error after the checks may leave memory partly written
	}{
		{name: "garbage", kernel: bytes.Repeat([]byte{0x42}, 4096), wantIs: ErrNotKernel, wantMsg: "not a bzImage or ELF kernel: bad magic"},
		{name: "empty", kernel: nil, wantIs: ErrNotKernel},
		{name: "three bytes", kernel: []byte{0x7f, 'E', 'L'}, wantIs: ErrNotKernel},
		{name: "boot flag only", kernel: makeBzImage(put32(hdrHeader, 0)), wantIs: ErrNotKernel},
		{name: "truncated setup header", kernel: makeBzImage()[:0x220], wantFmt: true, wantMsg: "truncated setup header"},
		{name: "truncated before version", kernel: makeBzImage()[:hdrVersion+1], wantFmt: true, wantMsg: "truncated setup header"},
		{name: "truncated kernel", kernel: makeBzImage()[:(testSetupSects+1)*sectorSize+100], wantFmt: true, wantMsg: "truncated"},
		{name: "setup_sects 0 means 4", kernel: makeBzImage(put8(hdrSetupSects, 0), put32(hdrSyssize, testSyssize+32)), wantFmt: true, wantMsg: "truncated"},
		{name: "protocol too old", kernel: makeBzImage(put16(hdrVersion, 0x0206)), wantIs: ErrUnsupported, wantMsg: "2.06"},
		{name: "no 64-bit entry", kernel: makeBzImage(put16(hdrXloadflags, xlfAbove4G)), wantIs: ErrUnsupported, wantMsg: "64-bit"},
		{name: "zImage", kernel: makeBzImage(put8(hdrLoadflags, 0)), wantIs: ErrUnsupported, wantMsg: "zImage"},
		{name: "jump is not a short jmp", kernel: makeBzImage(put8(hdrJump, 0xe9)), wantFmt: true},
		{name: "header overruns the hole", kernel: makeBzImage(put8(hdrJump+1, 0x90)), wantFmt: true, wantMsg: "past the boot_params hole"},
		{name: "header too short", kernel: makeBzImage(put8(hdrJump+1, 0x30)), wantFmt: true, wantMsg: "before init_size"},
		{name: "syssize zero", kernel: makeBzImage(put32(hdrSyssize, 0)), wantFmt: true, wantMsg: "syssize"},
		{name: "alignment not a power of two", kernel: makeBzImage(put32(hdrKernelAlignment, 0x300000)), wantFmt: true, wantMsg: "power of two"},
		{name: "alignment zero", kernel: makeBzImage(put32(hdrKernelAlignment, 0)), wantFmt: true},
		{name: "runtime area wraps", kernel: makeBzImage(put8(hdrRelocatableKernel, 0), put64(hdrPrefAddress, ^uint64(0)-10)), wantFmt: true, wantMsg: "wraps"},
		{name: "non-relocatable below 1 MiB", kernel: makeBzImage(put8(hdrRelocatableKernel, 0), put64(hdrPrefAddress, 0x10000)), wantFmt: true, wantMsg: "below 1 MiB"},
		{name: "kernel larger than memory (init_size)", kernel: makeBzImage(put32(hdrInitSize, testMemSize)), wantIs: ErrTooLarge, wantMsg: "kernel larger than memory"},
		{name: "kernel larger than memory (pref_address)", kernel: makeBzImage(put64(hdrPrefAddress, 0x40000000)), wantIs: ErrTooLarge},
		{name: "kernel above the identity map", kernel: makeBzImage(put8(hdrRelocatableKernel, 0), put64(hdrPrefAddress, 1<<32)), wantIs: ErrUnsupported, wantMsg: "identity map"},
		{name: "initrd does not fit", kernel: makeBzImage(), cfg: func(c *Config) { c.InitrdSize = testMemSize - 2*HighMemStart }, wantIs: ErrInitrdTooLarge},
		{name: "initrd does not fit below initrd_addr_max", kernel: makeBzImage(put32(hdrInitrdAddrMax, 0x300fff)), cfg: func(c *Config) { c.InitrdSize = 0x2000 }, wantIs: ErrInitrdTooLarge},
		{name: "initrd size without reader", kernel: makeBzImage(), cfg: func(c *Config) { c.Initrd, c.InitrdSize = nil, 10 }, wantMsg: "initrd"},
		{name: "initrd shorter than its size", kernel: makeBzImage(), cfg: func(c *Config) { c.Initrd, c.InitrdSize = bytes.NewReader(nil), 10 }, wantMsg: "reading initrd", partial: true},
		{name: "cmdline longer than cmdline_size", kernel: makeBzImage(), cfg: func(c *Config) { c.Cmdline = strings.Repeat("x", testCmdlineMax+1) }, wantIs: ErrCmdlineTooLong},
		{name: "cmdline longer than its area", kernel: bootimage.ELF(bootimage.Segs()), cfg: func(c *Config) { c.Cmdline = strings.Repeat("x", CmdlineMax) }, wantIs: ErrCmdlineTooLong},
		{name: "cmdline with NUL", kernel: makeBzImage(), cfg: func(c *Config) { c.Cmdline = "a\x00b" }, wantMsg: "NUL"},
		{name: "E820 empty", kernel: makeBzImage(), cfg: func(c *Config) { c.E820 = nil }, wantIs: ErrBadMemoryMap},
		{name: "E820 too long", kernel: makeBzImage(), cfg: func(c *Config) { c.E820 = tooManyE820 }, wantIs: ErrBadMemoryMap},
		{name: "E820 unsorted", kernel: makeBzImage(), cfg: func(c *Config) { c.E820[0], c.E820[2] = c.E820[2], c.E820[0] }, wantIs: ErrBadMemoryMap},
		{name: "E820 overlapping", kernel: makeBzImage(), cfg: func(c *Config) { c.E820[1].Size += 1 }, wantIs: ErrBadMemoryMap},
		{name: "E820 empty entry", kernel: makeBzImage(), cfg: func(c *Config) { c.E820[1].Size = 0 }, wantIs: ErrBadMemoryMap},
		{name: "E820 wraps", kernel: makeBzImage(), cfg: func(c *Config) { c.E820[2].Size = ^uint64(0) }, wantIs: ErrBadMemoryMap},
		{name: "E820 RAM past guest memory", kernel: makeBzImage(), cfg: func(c *Config) { c.E820 = pcE820(2 * testMemSize) }, wantIs: ErrBadMemoryMap},
		{name: "E820 without RAM", kernel: makeBzImage(), cfg: func(c *Config) { c.E820 = []E820Entry{{0, testMemSize, E820Reserved}} }, wantIs: ErrBadMemoryMap},
		{name: "E820 kernel range not RAM", kernel: makeBzImage(), cfg: func(c *Config) { c.E820[2].Type = E820Reserved }, wantIs: ErrTooLarge},
		{name: "ELF without PVH note", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg {
			s[1].Data = bootimage.Note("Xen", 6, []byte("linux\x00"))
			return s
		}),
			wantIs: ErrUnsupported, wantMsg: "ELF kernel has no PVH entry note"},
		{name: "ELF without note segment", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg { return s[:1] }), wantIs: ErrUnsupported, wantMsg: "no PVH entry note"},
		{name: "ELF PVH note under another name", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg {
			s[1].Data = bootimage.Note("Xan", xenElfnotePhys32, make([]byte, 8))
			return s
		}), wantIs: ErrUnsupported},
		{name: "ELF PVH note of 2 bytes", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg {
			s[1].Data = bootimage.Note("Xen", xenElfnotePhys32, []byte{1, 2})
			return s
		}), wantFmt: true, wantMsg: "4 or 8"},
		{name: "ELF PVH entry above 4 GiB", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg { s[1].Data = bootimage.PVHNote(1 << 32); return s }), wantFmt: true, wantMsg: "32-bit"},
		{name: "ELF PVH entry outside segments", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg { s[1].Data = bootimage.PVHNote(0x300000); return s }), wantFmt: true, wantMsg: "outside the loaded segments"},
		{name: "ELF PVH entry in bss", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg {
			s[1].Data = bootimage.PVHNote(bootimage.Load + bootimage.CodeSize + 8)
			return s
		}), wantFmt: true},
		{name: "ELF note past its segment", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg { s[1].Data = bootimage.PVHNote(bootimage.Entry)[:16]; return s }), wantFmt: true, wantMsg: "past its segment"},
		{name: "ELF segment outside memory", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg { s[0].Paddr = 2 * testMemSize; return s }), wantIs: ErrTooLarge},
		{name: "ELF segment straddles end of RAM", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg { s[0].Paddr = testMemSize - bootimage.CodeSize; return s }), wantIs: ErrTooLarge},
		{name: "ELF segment below 1 MiB", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg { s[0].Paddr = 0x1000; return s }), wantIs: ErrTooLarge},
		{name: "ELF segment wraps", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg { s[0].Paddr = ^uint64(0) - 0x100; return s }), wantIs: ErrTooLarge},
		{name: "ELF filesz > memsz", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg { s[0].Memsz = 0x10; return s }), wantFmt: true, wantMsg: "memsz"},
		{name: "ELF segment past end of file", kernel: bootimage.ELF(bootimage.Segs())[:0x100], wantFmt: true, wantMsg: "segment past end of file"},
		{name: "ELF 32-bit machine", kernel: bootimage.ELF(bootimage.Segs(), func(h *elf.Header64) { h.Machine = uint16(elf.EM_386) }), wantIs: ErrUnsupported},
		{name: "ELF not an executable", kernel: bootimage.ELF(bootimage.Segs(), func(h *elf.Header64) { h.Type = uint16(elf.ET_DYN) }), wantIs: ErrUnsupported},
		{name: "ELF truncated header", kernel: bootimage.ELF(bootimage.Segs())[:20], wantMsg: "ELF kernel"},
		{name: "ELF too many program headers", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg {
			return append(s, make([]bootimage.Seg, elfSegmentMaxCount)...)
		}), wantFmt: true, wantMsg: "program headers"},
		{name: "ELF no loadable segment", kernel: withSegs(func(s []bootimage.Seg) []bootimage.Seg { s[0].Typ = elf.PT_NULL; return s }), wantFmt: true},
		{name: "ELF initrd does not fit", kernel: bootimage.ELF(bootimage.Segs()), cfg: func(c *Config) { c.InitrdSize = testMemSize - 2*HighMemStart }, wantIs: ErrInitrdTooLarge},
	}
	zero := make([]byte, testMemSize)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			region := make([]byte, testMemSize)
			mem, err := memory.New(memory.Region{Data: region})
			require.NoError(t, err)
			cfg := bytesConfig(tt.kernel, make([]byte, 0x1000), "console=ttyS0")
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			e, err := Load(mem, cfg)
			require.Error(t, err)
			assert.Nil(t, e)
			if tt.wantIs != nil {
				assert.ErrorIs(t, err, tt.wantIs)
			}
			var fe *FormatError
			assert.Equal(t, tt.wantFmt, errors.As(err, &fe), "FormatError: %v", err)
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.True(t, strings.HasPrefix(err.Error(), "boot: "), err.Error())
			if !tt.partial {
				assert.True(t, bytes.Equal(zero, region), "guest memory written before the error")
			}
		})
	}
}

func TestNilMemory(t *testing.T) {
	_, err := Load(nil, bytesConfig(makeBzImage(), nil, ""))
	assert.Error(t, err)
}

// TestNoLowMemory: a machine without RAM below 1 MiB cannot hold the boot
// structures; Load reports it instead of panicking.
func TestNoLowMemory(t *testing.T) {
	for name, kernel := range map[string][]byte{"bzImage": makeBzImage(), "ELF": bootimage.ELF(bootimage.Segs())} {
		t.Run(name, func(t *testing.T) {
			mem, err := memory.New(memory.Region{Base: HighMemStart, Data: make([]byte, testMemSize)})
			require.NoError(t, err)
			cfg := bytesConfig(kernel, nil, "")
			cfg.E820 = []E820Entry{{HighMemStart, testMemSize, E820RAM}}
			_, err = Load(mem, cfg)
			assert.ErrorIs(t, err, memory.ErrOutOfRange)
		})
	}
}
