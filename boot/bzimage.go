package boot

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/gvmm-dev/gvmm/memory"
)

// Offsets into struct boot_params (arch/x86/include/uapi/asm/bootparam.h,
// Documentation/arch/x86/zero-page.rst). The setup header sits at the
// same offset (0x1f1) in the bzImage file and in boot_params, so the hdr*
// offsets index both.
const (
	bpACPIRSDPAddr    = 0x070
	bpExtRamdiskImage = 0x0c0
	bpExtRamdiskSize  = 0x0c4
	bpExtCmdLinePtr   = 0x0c8
	bpE820Entries     = 0x1e8
	bpSetupHeader     = 0x1f1
	bpEDDMBRSigBuffer = 0x290 // first field after the setup header's hole
	bpE820Table       = 0x2d0
	bootParamsSize    = 0x1000
	e820EntrySize     = 20 // struct boot_e820_entry, packed

	hdrSetupSects        = 0x1f1
	hdrSyssize           = 0x1f4
	hdrBootFlag          = 0x1fe
	hdrJump              = 0x200
	hdrHeader            = 0x202
	hdrVersion           = 0x206
	hdrTypeOfLoader      = 0x210
	hdrLoadflags         = 0x211
	hdrCode32Start       = 0x214
	hdrRamdiskImage      = 0x218
	hdrRamdiskSize       = 0x21c
	hdrHeapEndPtr        = 0x224
	hdrCmdLinePtr        = 0x228
	hdrInitrdAddrMax     = 0x22c
	hdrKernelAlignment   = 0x230
	hdrRelocatableKernel = 0x234
	hdrXloadflags        = 0x236
	hdrCmdlineSize       = 0x238
	hdrSetupData         = 0x250
	hdrPrefAddress       = 0x258
	hdrInitSize          = 0x260
)

// Setup header values (Documentation/arch/x86/boot.rst).
const (
	bootFlagMagic = 0xaa55
	headerMagic   = 0x53726448 // "HdrS"
	jmpShort      = 0xeb
	// minProtocol is 2.12, the first with xloadflags, which is how a
	// kernel says it has the 64-bit entry.
	minProtocol = 0x020c

	loadedHigh  = 1 << 0
	canUseHeap  = 1 << 7
	xlfKernel64 = 1 << 0
	xlfAbove4G  = 1 << 1

	// typeOfLoaderUndefined is 0xff: "no assigned boot loader id".
	typeOfLoaderUndefined = 0xff
	// heapEndPtr is boot.rst's sample value (heap end 0xe000, minus
	// 0x200). Only the real-mode setup code reads it, and that does not
	// run on the 64-bit entry, but the field is obligatory.
	heapEndPtr = 0xe000 - 0x200
	// entry64Offset is the 64-bit entry point's offset in the
	// protected-mode kernel.
	entry64Offset = 0x200
	sectorSize    = 512
)

// bzImage is the part of a bzImage's setup header the loader acts on.
type bzImage struct {
	header     []byte // bytes 0 to hdrEnd of the file; [0x1f1, hdrEnd) is the setup header
	setupSize  int64  // real-mode part, (setup_sects+1)*512
	kernelSize uint64 // protected-mode part, syssize*16
	footprint  span   // load address to the end of the runtime area (init_size)
	initrdMax  uint64 // exclusive upper bound for the initrd
	cmdlineMax uint64 // cmdline_size: longest command line, without the NUL
}

// parseBzImage checks the setup header and works out where the kernel
// goes; it reads the image but writes nothing.
func parseBzImage(kernel *io.SectionReader) (*bzImage, error) {
	buf := make([]byte, bpEDDMBRSigBuffer)
	n, err := kernel.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading kernel: %w", err)
	}
	buf = buf[:n]
	le := binary.LittleEndian
	if n < hdrHeader+4 || le.Uint16(buf[hdrBootFlag:]) != bootFlagMagic || le.Uint32(buf[hdrHeader:]) != headerMagic {
		return nil, fmt.Errorf("%w: bad magic", ErrNotKernel)
	}
	if n < hdrVersion+2 {
		return nil, &FormatError{Off: int64(n), Msg: "truncated setup header"}
	}
	if v := le.Uint16(buf[hdrVersion:]); v < minProtocol {
		return nil, fmt.Errorf("%w: boot protocol %d.%02d is too old, need 2.12 for the 64-bit entry", ErrUnsupported, v>>8, v&0xff)
	}
	// The jump at 0x200 skips the header: its 8-bit offset is the
	// header's length past 0x202.
	if buf[hdrJump] != jmpShort {
		return nil, &FormatError{Off: hdrJump, Msg: fmt.Sprintf("setup header jump opcode %#x, want %#x", buf[hdrJump], jmpShort)}
	}
	hdrEnd := int(hdrHeader) + int(buf[hdrJump+1])
	if hdrEnd > bpEDDMBRSigBuffer {
		return nil, &FormatError{Off: hdrJump + 1, Msg: fmt.Sprintf("setup header ends at %#x, past the boot_params hole (%#x)", hdrEnd, bpEDDMBRSigBuffer)}
	}
	if hdrEnd < hdrInitSize+4 {
		return nil, &FormatError{Off: hdrJump + 1, Msg: fmt.Sprintf("setup header ends at %#x, before init_size", hdrEnd)}
	}
	if n < hdrEnd {
		return nil, &FormatError{Off: int64(n), Msg: "truncated setup header"}
	}
	b := &bzImage{header: buf[:hdrEnd]}

	if buf[hdrLoadflags]&loadedHigh == 0 {
		return nil, fmt.Errorf("%w: zImage (not loaded high)", ErrUnsupported)
	}
	xlf := le.Uint16(buf[hdrXloadflags:])
	if xlf&xlfKernel64 == 0 {
		return nil, fmt.Errorf("%w: no 64-bit entry point (XLF_KERNEL_64 clear)", ErrUnsupported)
	}

	setupSects := int64(buf[hdrSetupSects])
	if setupSects == 0 {
		setupSects = 4 // boot.rst: 0 means 4, for backwards compatibility
	}
	b.setupSize = (setupSects + 1) * sectorSize
	b.kernelSize = uint64(le.Uint32(buf[hdrSyssize:])) * 16
	if b.kernelSize == 0 {
		return nil, &FormatError{Off: hdrSyssize, Msg: "syssize is zero"}
	}
	// syssize, not the file size: signed images carry a signature after
	// the kernel.
	if fileSize := uint64(kernel.Size()); uint64(b.setupSize) > fileSize || b.kernelSize > fileSize-uint64(b.setupSize) {
		return nil, &FormatError{Off: kernel.Size(), Msg: fmt.Sprintf("truncated: setup (%#x) and protected-mode kernel (%#x) exceed the file", b.setupSize, b.kernelSize)}
	}

	// Runtime start per boot.rst's init_size algorithm; head_64.S also
	// never decompresses below LOAD_PHYSICAL_ADDR, which pref_address
	// reports. A non-relocatable kernel moves itself to pref_address.
	runtime := le.Uint64(buf[hdrPrefAddress:])
	if buf[hdrRelocatableKernel] != 0 {
		align := uint64(le.Uint32(buf[hdrKernelAlignment:]))
		if !isPowerOfTwo(align) {
			return nil, &FormatError{Off: hdrKernelAlignment, Msg: fmt.Sprintf("kernel_alignment %#x is not a power of two", align)}
		}
		aligned, ok := alignUp(HighMemStart, align)
		if !ok {
			return nil, &FormatError{Off: hdrKernelAlignment, Msg: fmt.Sprintf("kernel_alignment %#x overflows", align)}
		}
		runtime = max(aligned, runtime)
	} else if runtime == 0 {
		runtime = HighMemStart // pre-2.10 meaning: runs where it is loaded
	}
	rt, ok := newSpan(runtime, uint64(le.Uint32(buf[hdrInitSize:])))
	if !ok {
		return nil, &FormatError{Off: hdrPrefAddress, Msg: fmt.Sprintf("runtime area at %#x wraps", runtime)}
	}
	if rt.start < HighMemStart {
		return nil, &FormatError{Off: hdrPrefAddress, Msg: fmt.Sprintf("runtime address %#x is below 1 MiB", rt.start)}
	}
	b.footprint = span{HighMemStart, max(HighMemStart+b.kernelSize, rt.end)}

	b.initrdMax = uint64(le.Uint32(buf[hdrInitrdAddrMax:])) + 1 // field is the highest byte
	if xlf&xlfAbove4G != 0 {
		b.initrdMax = math.MaxUint64
	}
	b.cmdlineMax = uint64(le.Uint32(buf[hdrCmdlineSize:]))
	return b, nil
}

// loadBzImage loads a bzImage for the 64-bit boot protocol.
func loadBzImage(mem *memory.Memory, kernel *io.SectionReader, cfg Config) (*Entry, error) {
	b, err := parseBzImage(kernel)
	if err != nil {
		return nil, err
	}
	// The entry state's page tables map only the first 4 GiB, and
	// boot.rst wants the kernel's range identity-mapped at entry.
	if b.footprint.end > identityMap {
		return nil, fmt.Errorf("%w: kernel range %v extends past the 4 GiB identity map", ErrUnsupported, b.footprint)
	}
	if !inRAM(cfg.E820, b.footprint) {
		return nil, fmt.Errorf("%w: kernel needs %v (load address to end of init_size) in one RAM range", ErrTooLarge, b.footprint)
	}
	if uint64(len(cfg.Cmdline)) > b.cmdlineMax {
		return nil, fmt.Errorf("%w: %d bytes, kernel accepts %d", ErrCmdlineTooLong, len(cfg.Cmdline), b.cmdlineMax)
	}
	var initrdAddr uint64
	if cfg.InitrdSize > 0 {
		if initrdAddr, err = placeInitrd(cfg.E820, uint64(cfg.InitrdSize), b.initrdMax, b.footprint); err != nil {
			return nil, err
		}
	}

	dst, err := mem.Slice(HighMemStart, b.kernelSize)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if _, err := io.ReadFull(io.NewSectionReader(kernel, b.setupSize, int64(b.kernelSize)), dst); err != nil {
		return nil, fmt.Errorf("reading kernel: %w", err)
	}
	if err := loadInitrd(mem, cfg, initrdAddr); err != nil {
		return nil, err
	}
	if err := writeCmdline(mem, cfg.Cmdline); err != nil {
		return nil, fmt.Errorf("writing command line: %w", err)
	}
	if err := mem.WriteAt(b.bootParams(cfg, initrdAddr), BootParamsAddr); err != nil {
		return nil, fmt.Errorf("writing boot_params: %w", err)
	}
	if err := writePageTables(mem); err != nil {
		return nil, err
	}
	e, err := newEntry(mem, Long64)
	if err != nil {
		return nil, err
	}
	e.RIP = HighMemStart + entry64Offset
	e.RSI = BootParamsAddr
	e.CR0 = cr0PE | cr0ET | cr0PG
	e.CR3 = PML4Addr
	e.CR4 = cr4PAE
	e.EFER = eferLME | eferLMA
	return e, nil
}

// bootParams builds the zero page: zeroed, the image's setup header
// copied in, then the loader's fields.
func (b *bzImage) bootParams(cfg Config, initrdAddr uint64) []byte {
	bp := make([]byte, bootParamsSize)
	copy(bp[bpSetupHeader:], b.header[bpSetupHeader:])
	le := binary.LittleEndian
	bp[hdrTypeOfLoader] = typeOfLoaderUndefined
	bp[hdrLoadflags] |= canUseHeap
	le.PutUint16(bp[hdrHeapEndPtr:], heapEndPtr)
	le.PutUint32(bp[hdrCode32Start:], HighMemStart)
	// The image's setup_data is a build-time default the kernel would
	// follow as a pointer; this loader passes none.
	le.PutUint64(bp[hdrSetupData:], 0)
	putSplit(bp, hdrCmdLinePtr, bpExtCmdLinePtr, CmdlineAddr)
	putSplit(bp, hdrRamdiskImage, bpExtRamdiskImage, initrdAddr)
	putSplit(bp, hdrRamdiskSize, bpExtRamdiskSize, uint64(cfg.InitrdSize))
	le.PutUint64(bp[bpACPIRSDPAddr:], uint64(cfg.RSDP))
	bp[bpE820Entries] = byte(len(cfg.E820))
	for i, e := range cfg.E820 {
		putBootE820(bp[bpE820Table+i*e820EntrySize:], e)
	}
	return bp
}

// putSplit stores the low 32 bits of v at lo and the high 32 bits at hi,
// the way boot_params extends its 32-bit header fields.
func putSplit(bp []byte, lo, hi int, v uint64) {
	binary.LittleEndian.PutUint32(bp[lo:], uint32(v))
	binary.LittleEndian.PutUint32(bp[hi:], uint32(v>>32))
}

// putBootE820 encodes struct boot_e820_entry.
func putBootE820(dst []byte, e E820Entry) {
	binary.LittleEndian.PutUint64(dst, e.Addr)
	binary.LittleEndian.PutUint64(dst[8:], e.Size)
	binary.LittleEndian.PutUint32(dst[16:], uint32(e.Type))
}
