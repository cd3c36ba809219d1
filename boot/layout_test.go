package boot

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBootParamsOffsets checks every named offset against boot.rst and
// bootparam.h (the literals on the right are copied from the spec).
func TestBootParamsOffsets(t *testing.T) {
	tests := []struct {
		name      string
		got, want int
	}{
		{"acpi_rsdp_addr", bpACPIRSDPAddr, 0x070},
		{"ext_ramdisk_image", bpExtRamdiskImage, 0x0c0},
		{"ext_ramdisk_size", bpExtRamdiskSize, 0x0c4},
		{"ext_cmd_line_ptr", bpExtCmdLinePtr, 0x0c8},
		{"e820_entries", bpE820Entries, 0x1e8},
		{"hdr", bpSetupHeader, 0x1f1},
		{"edd_mbr_sig_buffer", bpEDDMBRSigBuffer, 0x290},
		{"e820_table", bpE820Table, 0x2d0},
		{"sizeof(boot_params)", bootParamsSize, 4096},
		{"sizeof(boot_e820_entry)", e820EntrySize, 20},
		{"setup_sects", hdrSetupSects, 0x1f1},
		{"syssize", hdrSyssize, 0x1f4},
		{"boot_flag", hdrBootFlag, 0x1fe},
		{"jump", hdrJump, 0x200},
		{"header", hdrHeader, 0x202},
		{"version", hdrVersion, 0x206},
		{"type_of_loader", hdrTypeOfLoader, 0x210},
		{"loadflags", hdrLoadflags, 0x211},
		{"code32_start", hdrCode32Start, 0x214},
		{"ramdisk_image", hdrRamdiskImage, 0x218},
		{"ramdisk_size", hdrRamdiskSize, 0x21c},
		{"heap_end_ptr", hdrHeapEndPtr, 0x224},
		{"cmd_line_ptr", hdrCmdLinePtr, 0x228},
		{"initrd_addr_max", hdrInitrdAddrMax, 0x22c},
		{"kernel_alignment", hdrKernelAlignment, 0x230},
		{"relocatable_kernel", hdrRelocatableKernel, 0x234},
		{"xloadflags", hdrXloadflags, 0x236},
		{"cmdline_size", hdrCmdlineSize, 0x238},
		{"setup_data", hdrSetupData, 0x250},
		{"pref_address", hdrPrefAddress, 0x258},
		{"init_size", hdrInitSize, 0x260},
		{"e820_table end fits before _pad8", bpE820Table + maxE820Entries*e820EntrySize, 0xcd0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { assert.Equal(t, tt.want, tt.got) })
	}
}

// TestStartInfoLayout checks hvm_start_info, hvm_modlist_entry and
// hvm_memmap_table_entry against Xen's start_info.h.
func TestStartInfoLayout(t *testing.T) {
	tests := []struct {
		name      string
		got, want int
	}{
		{"magic", siMagic, 0},
		{"version", siVersion, 4},
		{"flags", siFlags, 8},
		{"nr_modules", siNrModules, 12},
		{"modlist_paddr", siModlistPaddr, 16},
		{"cmdline_paddr", siCmdlinePaddr, 24},
		{"rsdp_paddr", siRSDPPaddr, 32},
		{"memmap_paddr", siMemmapPaddr, 40},
		{"memmap_entries", siMemmapEntries, 48},
		{"sizeof(hvm_start_info)", startInfoSize, 56},
		{"modlist paddr", modPaddr, 0},
		{"modlist size", modSize, 8},
		{"sizeof(hvm_modlist_entry)", modlistEntrySize, 32},
		{"memmap addr", memmapAddr, 0},
		{"memmap size", memmapSize, 8},
		{"memmap type", memmapType, 16},
		{"memmap reserved", memmapReserved, 20},
		{"sizeof(hvm_memmap_table_entry)", memmapEntrySize, 24},
		{"XEN_HVM_START_MAGIC_VALUE", pvhMagic, 0x336ec578},
		{"XEN_ELFNOTE_PHYS32_ENTRY", xenElfnotePhys32, 18},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { assert.Equal(t, tt.want, tt.got) })
	}
}

func TestE820Encoding(t *testing.T) {
	e := E820Entry{Addr: 0x0102030405060708, Size: 0x1112131415161718, Type: E820ACPI}
	boot := make([]byte, e820EntrySize)
	putBootE820(boot, e)
	assert.Equal(t, []byte{
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
		0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,
		0x03, 0, 0, 0,
	}, boot)

	pvh := make([]byte, memmapEntrySize)
	for i := range pvh {
		pvh[i] = 0xee // the reserved word must be cleared
	}
	putPVHMemmap(pvh, e)
	assert.Equal(t, append(boot, 0, 0, 0, 0), pvh)
}

// TestLowMemoryLayout checks that the fixed structures neither overlap
// each other nor reach the IVT/BDA below 0x500 or the EBDA.
func TestLowMemoryLayout(t *testing.T) {
	ranges := []struct {
		name string
		s    span
	}{
		{"GDT", span{GDTAddr, GDTAddr + gdtSize}},
		{"PVH memmap", span{PVHMemmapAddr, PVHMemmapAddr + maxE820Entries*memmapEntrySize}},
		{"hvm_start_info", span{PVHStartInfoAddr, PVHStartInfoAddr + startInfoSize}},
		{"PVH modlist", span{PVHModlistAddr, PVHModlistAddr + modlistEntrySize}},
		{"boot_params", span{BootParamsAddr, BootParamsAddr + bootParamsSize}},
		{"stack", span{BootStackAddr, BootStackTop}},
		{"PML4", span{PML4Addr, PML4Addr + pageSize}},
		{"PDPT", span{PDPTAddr, PDPTAddr + pageSize}},
		{"PDs", span{PDAddr, PDAddr + numPD*pageSize}},
		{"command line", span{CmdlineAddr, CmdlineAddr + CmdlineMax}},
	}
	area := span{0x500, EBDAStart}
	for i, a := range ranges {
		assert.True(t, a.s.within(area), "%s %v outside %v", a.name, a.s, area)
		for _, b := range ranges[i+1:] {
			assert.False(t, a.s.overlaps(b.s), "%s %v overlaps %s %v", a.name, a.s, b.name, b.s)
		}
	}
	for _, a := range []uint64{PML4Addr, PDPTAddr, PDAddr, BootParamsAddr} {
		assert.Zero(t, a%pageSize, "%#x is not page aligned", a)
	}
	assert.Zero(t, GDTAddr%8)
	assert.Zero(t, BootStackTop%16)
	assert.Equal(t, uint64(HighMemStart), uint64(0x100000))
}

func TestSetupSectsZeroMeansFour(t *testing.T) {
	image := makeBzImage(put8(hdrSetupSects, 0))
	mem := newTestMemory(t, testMemSize)
	_, err := Load(mem, bytesConfig(image, nil, ""))
	require.NoError(t, err)
	got := readGuest(t, mem, HighMemStart, 16)
	assert.Equal(t, image[5*sectorSize:5*sectorSize+16], got)
	// Without an initrd the ramdisk fields are zero.
	bp := readGuest(t, mem, BootParamsAddr, bootParamsSize)
	assert.Zero(t, binary.LittleEndian.Uint32(bp[hdrRamdiskImage:]))
	assert.Zero(t, binary.LittleEndian.Uint32(bp[hdrRamdiskSize:]))
}
