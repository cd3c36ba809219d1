package machine

import (
	"fmt"

	"github.com/gvmm-dev/gvmm/boot"
)

// Guest physical layout. RAM starts at 0; when it does not fit below
// MMIOHoleStart the rest is placed from 4 GiB up, leaving the hole for
// PCI BARs, the ECAM window, the IOAPIC and the LAPIC.
const (
	MiB = 1 << 20
	GiB = 1 << 30

	// MMIOHoleStart is where RAM below 4 GiB ends when the guest has
	// more memory than fits: 3 GiB, as Firecracker and QEMU's q35 do.
	MMIOHoleStart = 3 * GiB
	// HighRAMStart is where RAM above the hole continues.
	HighRAMStart = 4 * GiB
	// ECAMBase is the PCI Express configuration window for bus 0.
	ECAMBase = 0xe0000000
	ECAMSize = 1 * MiB
	// PCIMMIOStart..PCIMMIOEnd is where 32-bit BARs are placed.
	PCIMMIOStart = 0xc0000000
	PCIMMIOEnd   = ECAMBase
	// IOAPICAddr and LAPICAddr are where KVM's in-kernel irqchip decodes.
	IOAPICAddr = 0xfec00000
	LAPICAddr  = 0xfee00000
	// KVM needs three pages for the TSS and one for the EPT identity map
	// on Intel (ignored on AMD) somewhere no RAM or device is.
	IdentityMapAddr = 0xfeffc000
	TSSAddr         = IdentityMapAddr + 0x1000

	// MinMemory keeps the kernel, its initrd and boot structures room.
	MinMemory = 64 * MiB
	// MaxMemory bounds what one guest can be given (1 TiB).
	MaxMemory = 1 << 40
)

// ramRange is one contiguous block of guest RAM.
type ramRange struct {
	base, size uint64
}

// ramLayout splits size bytes of RAM around the MMIO hole.
func ramLayout(size uint64) []ramRange {
	if size <= MMIOHoleStart {
		return []ramRange{{0, size}}
	}
	return []ramRange{{0, MMIOHoleStart}, {HighRAMStart, size - MMIOHoleStart}}
}

// e820 describes the RAM to the kernel: the legacy BIOS area and the
// ACPI tables in it are reserved, as is the ECAM window, so that Linux
// trusts the MCFG table.
func e820(ram []ramRange) ([]boot.E820Entry, error) {
	low := ram[0]
	if low.size < MinMemory {
		return nil, fmt.Errorf("machine: %d MiB of RAM is below the minimum of %d MiB", low.size/MiB, MinMemory/MiB)
	}
	m := []boot.E820Entry{
		{Addr: 0, Size: boot.EBDAStart, Type: boot.E820RAM},
		{Addr: boot.EBDAStart, Size: boot.HighMemStart - boot.EBDAStart, Type: boot.E820Reserved},
		{Addr: boot.HighMemStart, Size: low.size - boot.HighMemStart, Type: boot.E820RAM},
		{Addr: ECAMBase, Size: ECAMSize, Type: boot.E820Reserved},
	}
	for _, r := range ram[1:] {
		m = append(m, boot.E820Entry{Addr: r.base, Size: r.size, Type: boot.E820RAM})
	}
	return m, nil
}
