// Package acpi builds the ACPI tables a stock Linux kernel needs to find
// every vCPU, the interrupt controllers, PCI ECAM, the legacy devices, and
// the PM registers through which "poweroff" reaches the VMM: RSDP, XSDT,
// FADT (full, not hardware-reduced), FACS, DSDT, MADT and optionally MCFG.
//
// Build is a pure function: it lays the tables out for a given guest
// physical base and returns the bytes; the machine copies them into guest
// memory and passes the RSDP address to the boot loader.
package acpi

import (
	"errors"
	"fmt"

	"github.com/gvmm-dev/gvmm/devices/pm"
	"github.com/gvmm-dev/gvmm/machine/acpi/aml"
	"github.com/gvmm-dev/gvmm/memory"
)

// The region the machine reserves for the tables (e820 reserved): the
// BIOS area, where Linux also scans for the RSDP if it is not told.
const (
	RegionBase memory.GuestAddress = 0xe0000
	RegionSize uint64              = 0x20000
)

// MaxCPUs is the xAPIC limit: APIC IDs 0..254, 0xff being the broadcast ID.
const MaxCPUs = 255

// MaxSerial is the number of legacy COM ports (COM1-COM4).
const MaxSerial = 4

// Config describes the machine the tables advertise.
type Config struct {
	CPUs       int    // processors with APIC IDs 0..CPUs-1
	LAPICAddr  uint32 // local APIC base, normally 0xfee00000
	IOAPICAddr uint32 // I/O APIC base, normally 0xfec00000; GSI base 0
	PM         PMConfig
	// Reset, if set, is the FADT reset register Linux writes first on
	// reboot; nil leaves RESET_REG_SUP clear.
	Reset *ResetRegister
	// MCFG, if set, adds an MCFG table for PCI Express ECAM.
	MCFG *MCFGConfig
	// Serial ports become \_SB.COM1, COM2... (PNP0501) in the DSDT.
	Serial []SerialPort
	// Devices are appended inside the DSDT's \_SB scope, after the serial
	// ports: the hook for devices such as a PCI root bridge.
	Devices []aml.Term
}

// PMConfig locates the devices/pm register block.
type PMConfig struct {
	Port uint16 // base of the block; see package pm for the layout
	SCI  uint8  // ISA IRQ of the SCI, identity-mapped to the same GSI
}

// ResetRegister is an 8-bit I/O port write that resets the machine.
type ResetRegister struct {
	Port  uint16
	Value uint8
}

// MCFGConfig describes the ECAM window of PCI segment 0.
type MCFGConfig struct {
	Base     uint64 // ECAM address of bus 0, 1 MiB aligned
	StartBus uint8
	EndBus   uint8
}

// SerialPort is a legacy 16550 UART: 8 ports from Port, ISA IRQ IRQ.
type SerialPort struct {
	Port uint16
	IRQ  uint8
}

// ErrInvalidConfig is wrapped by every *ConfigError.
var ErrInvalidConfig = errors.New("acpi: invalid configuration")

// ErrNoSpace is wrapped by every *SpaceError.
var ErrNoSpace = errors.New("acpi: tables do not fit")

// ConfigError names the configuration field Build rejected.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("acpi: invalid %s: %s", e.Field, e.Reason)
}

func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// SpaceError reports tables larger than the region given to Build.
type SpaceError struct {
	Need, Have uint64
}

func (e *SpaceError) Error() string {
	return fmt.Sprintf("acpi: tables need %d bytes, region has %d", e.Need, e.Have)
}

func (e *SpaceError) Unwrap() error { return ErrNoSpace }

// fourGiB bounds the region: FADT's DSDT and FIRMWARE_CTRL are 32-bit.
const fourGiB = 1 << 32

func (c *Config) validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case c.CPUs < 1 || c.CPUs > MaxCPUs:
		return bad("CPUs", "%d not in 1..%d", c.CPUs, MaxCPUs)
	case c.LAPICAddr == 0:
		return bad("LAPICAddr", "zero")
	case c.IOAPICAddr == 0:
		return bad("IOAPICAddr", "zero")
	case c.PM.Port == 0 || uint32(c.PM.Port)+pm.Size > 0x10000:
		return bad("PM.Port", "%#x: block of %d ports must be inside 1..0xffff", c.PM.Port, pm.Size)
	// IRQ 0 is remapped to GSI 2 and IRQ 2 is the PIC cascade.
	case c.PM.SCI == 0 || c.PM.SCI == 2 || c.PM.SCI > 15:
		return bad("PM.SCI", "IRQ %d is not a free ISA IRQ", c.PM.SCI)
	case len(c.Serial) > MaxSerial:
		return bad("Serial", "%d ports, at most %d", len(c.Serial), MaxSerial)
	}
	for i, s := range c.Serial {
		if s.Port == 0 || uint32(s.Port)+serialPorts > 0x10000 || s.IRQ > 15 {
			return bad(fmt.Sprintf("Serial[%d]", i), "port %#x IRQ %d", s.Port, s.IRQ)
		}
	}
	if m := c.MCFG; m != nil {
		switch {
		case m.Base%(1<<20) != 0:
			return bad("MCFG.Base", "%#x not 1 MiB aligned", m.Base)
		case m.StartBus > m.EndBus:
			return bad("MCFG", "start bus %d above end bus %d", m.StartBus, m.EndBus)
		case m.Base+(uint64(m.EndBus)+1)<<20 < m.Base:
			return bad("MCFG.Base", "%#x: ECAM window overflows", m.Base)
		}
	}
	return nil
}

// Build lays the tables out at base, which must be 16-byte aligned, in a
// region of size bytes below 4 GiB. It returns the bytes to copy to base
// and the RSDP's address (base itself).
func Build(cfg Config, base memory.GuestAddress, size uint64) (tables []byte, rsdp memory.GuestAddress, err error) {
	if err := cfg.validate(); err != nil {
		return nil, 0, err
	}
	if base%16 != 0 {
		return nil, 0, &ConfigError{Field: "base", Reason: fmt.Sprintf("%#x not 16-byte aligned", uint64(base))}
	}
	if uint64(base) >= fourGiB || size > fourGiB-uint64(base) {
		return nil, 0, &ConfigError{Field: "base", Reason: fmt.Sprintf("region %#x+%#x not below 4 GiB", uint64(base), size)}
	}

	dsdt, err := buildDSDT(&cfg)
	if err != nil {
		return nil, 0, err
	}
	l := layout{base: base}
	l.place(make([]byte, rsdpLen), 16) // filled in once the XSDT is placed
	facsAddr := l.place(buildFACS(), facsAlign)
	dsdtAddr := l.place(dsdt, 16)
	entries := []memory.GuestAddress{
		l.place(buildFADT(&cfg, facsAddr, dsdtAddr), 16),
		l.place(buildMADT(&cfg), 16),
	}
	if cfg.MCFG != nil {
		entries = append(entries, l.place(buildMCFG(cfg.MCFG), 16))
	}
	xsdtAddr := l.place(buildXSDT(entries), 16)
	copy(l.buf, buildRSDP(xsdtAddr))

	if uint64(len(l.buf)) > size {
		return nil, 0, &SpaceError{Need: uint64(len(l.buf)), Have: size}
	}
	return l.buf, base, nil
}

// layout appends tables to one buffer that will be copied to base.
type layout struct {
	base memory.GuestAddress
	buf  []byte
}

// place pads the buffer so that the table's guest address is a multiple
// of align, appends the table and returns that address.
func (l *layout) place(table []byte, align uint64) memory.GuestAddress {
	for (uint64(l.base)+uint64(len(l.buf)))%align != 0 {
		l.buf = append(l.buf, 0)
	}
	addr := l.base + memory.GuestAddress(len(l.buf))
	l.buf = append(l.buf, table...)
	return addr
}
