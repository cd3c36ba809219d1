package boot

// Fixed guest-physical layout of what the loader writes below 1 MiB. All
// of it lies between the real-mode IVT/BIOS data area (0x0-0x4ff, left
// alone) and EBDAStart, from where the machine keeps the EBDA, BIOS and
// ACPI tables; layout_test.go checks that no two ranges overlap. Fixed
// addresses keep boot deterministic, and low memory is where the kernel
// expects boot data it has not yet reserved for itself.
const (
	// GDTAddr holds the boot GDT: null, null, code (0x10), data (0x18)
	// and a 16-byte TSS descriptor (0x20); gdtSize bytes.
	GDTAddr = 0x500
	// PVHMemmapAddr holds the PVH memory map, up to maxE820Entries
	// 24-byte hvm_memmap_table_entry records.
	PVHMemmapAddr = 0x1000
	// PVHStartInfoAddr holds the 56-byte hvm_start_info (passed in RBX).
	PVHStartInfoAddr = 0x6000
	// PVHModlistAddr holds the one 32-byte hvm_modlist_entry (the initrd).
	PVHModlistAddr = 0x6040
	// BootParamsAddr holds the 4 KiB boot_params "zero page" (passed in RSI).
	BootParamsAddr = 0x7000
	// BootStackAddr..BootStackTop is the initial stack. Neither protocol
	// requires one (both kernels load their own first thing); RSP points
	// here so that an early push lands in memory the loader owns.
	BootStackAddr = 0x8000
	BootStackTop  = 0x9000
	// PML4Addr, PDPTAddr and the four page directories at PDAddr
	// identity-map the first 4 GiB with 2 MiB pages (64-bit entry only).
	PML4Addr = 0x9000
	PDPTAddr = 0xa000
	PDAddr   = 0xb000
	// CmdlineAddr holds the NUL-terminated command line, at most
	// CmdlineMax bytes including the NUL.
	CmdlineAddr = 0x20000
	CmdlineMax  = 0x10000
	// EBDAStart is the end of the loader's low-memory area.
	EBDAStart = 0x9fc00
	// HighMemStart is where a bzImage's protected-mode code is loaded
	// (boot.rst: bzImage kernels load at 0x100000); no kernel segment or
	// initrd goes below it.
	HighMemStart = 0x100000
)

const (
	pageSize    = 0x1000
	gdtEntries  = 6
	gdtSize     = gdtEntries * 8
	numPD       = 4 // page directories, 1 GiB each
	identityMap = numPD << 30
)
