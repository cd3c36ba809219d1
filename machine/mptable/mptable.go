// Package mptable builds the Intel MultiProcessor Specification 1.4 table
// (MP floating pointer and MP configuration table) that firmware leaves
// for the kernel. gvmm describes the machine with ACPI, and Linux then
// ignores the MP table's contents; but Linux looks for the floating
// pointer before it reads ACPI, and without one it scans all of
// 0xf0000-0xfffff, re-mapping memory at every 16-byte step. With one at
// the start of the EBDA it stops after its first probe there.
//
// The table says what the MADT says: vCPU i has APIC ID i, one I/O APIC
// at pin base 0, ISA IRQ 0 on pin 2 and the SCI level-triggered.
package mptable

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gvmm-dev/gvmm/boot"
	"github.com/gvmm-dev/gvmm/memory"
)

// The region the machine reserves for the table, inside the e820
// reserved range from the EBDA to 1 MiB and below the ACPI tables at
// 0xe0000. Linux probes the floating pointer at the EBDA's first
// 16 bytes (its second probe, after the first KiB of RAM); the
// configuration table follows it, running past 0xa0000 when there are
// more than about 45 vCPUs, where gvmm has RAM and no VGA window.
const (
	RegionBase memory.GuestAddress = boot.EBDAStart
	RegionSize uint64              = 0x1800
)

// MaxCPUs leaves one xAPIC ID (CPUs) for the I/O APIC below the
// broadcast ID 0xff, and keeps the table inside RegionSize.
const MaxCPUs = 254

// Config describes the machine the table advertises.
type Config struct {
	CPUs       int    // processors with APIC IDs 0..CPUs-1; CPU 0 boots
	LAPICAddr  uint32 // local APIC base, normally 0xfee00000
	IOAPICAddr uint32 // I/O APIC base, normally 0xfec00000
	// SCI, if not 0, is the ISA IRQ of the ACPI SCI, declared
	// level-triggered and active high as the MADT declares it.
	SCI uint8
}

// ErrInvalidConfig is wrapped by every *ConfigError.
var ErrInvalidConfig = errors.New("mptable: invalid configuration")

// ConfigError names the configuration field Build rejected.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("mptable: invalid %s: %s", e.Field, e.Reason)
}

func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// MP floating pointer structure (MP Spec 1.4, 4.1). Feature byte 1 = 0
// means "a configuration table is present"; feature byte 2 bit 7 = 0
// means virtual wire mode (no IMCR), which is what KVM's PIC/APIC do.
const (
	mpfSignature = "_MP_"
	mpfPhysPtr   = 4
	mpfLength    = 8 // in 16-byte units
	mpfSpecRev   = 9
	mpfChecksum  = 10
	mpfLen       = 16
)

// MP configuration table header (MP Spec 1.4, 4.2).
const (
	mpcSignature   = "PCMP"
	mpcLength      = 4
	mpcSpecRev     = 6
	mpcChecksum    = 7
	mpcOEMID       = 8
	mpcProductID   = 16
	mpcEntryCount  = 34
	mpcLAPICAddr   = 36
	mpcHeaderLen   = 44
	specRev        = 4              // MP Spec 1.4
	oemID          = "GVMM    "     // 8 bytes
	productID      = "GVMM        " // 12 bytes
	processorLen   = 20
	entryLen       = 8 // bus, I/O APIC, I/O and local interrupt entries
	entryProcessor = 0
	entryBus       = 1
	entryIOAPIC    = 2
	entryIOInt     = 3
	entryLocalInt  = 4
)

// Entry fields (MP Spec 1.4, 4.3).
const (
	// The local APIC version of an integrated xAPIC (KVM reports 0x14)
	// and the I/O APIC version of KVM's 82093AA-like I/O APIC.
	lapicVersion  = 0x14
	ioapicVersion = 0x11
	cpuEnabled    = 1 << 0
	cpuBSP        = 1 << 1
	ioapicEnabled = 1 << 0
	// A family 6 signature with FPU and APIC features, as Firecracker
	// writes; Linux reads neither, CPUID is what it trusts.
	cpuSignature = 0x600
	cpuFeatures  = 1<<0 | 1<<9

	isaBusID   = 0
	isaBusType = "ISA   " // 6 bytes
	isaIRQs    = 16

	intINT    = 0
	intNMI    = 1
	intExtINT = 3

	// Interrupt flags: polarity bits 1:0, trigger mode bits 3:2, as in
	// the MADT's MPS INTI flags.
	flagsConforming = 0
	flagsActiveHigh = 1 << 0
	flagsLevel      = 3 << 2

	// The PIT's IRQ 0 is on I/O APIC pin 2, where the machine routes it
	// and the MADT's override says; IRQ 2 is the PIC cascade, no source.
	pitIRQ     = 0
	pitPin     = 2
	cascadeIRQ = 2

	// ExtINT goes to the BSP's LINT0 only, NMI to every LINT1 (0xff),
	// as SeaBIOS and Firecracker declare them.
	bspAPICID   = 0
	allLAPICs   = 0xff
	lint0       = 0
	lint1       = 1
	noSourceIRQ = 0
)

// Entries besides the processors: the ISA bus, the I/O APIC, every ISA
// IRQ but the cascade, and the two local interrupts.
const fixedEntries = 1 + 1 + (isaIRQs - 1) + 2

// Size returns the bytes Build produces for cpus vCPUs.
func Size(cpus int) uint64 {
	return mpfLen + mpcHeaderLen + uint64(cpus)*processorLen + fixedEntries*entryLen
}

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
	// 0 means no SCI; IRQ 0 belongs to the PIT in any case.
	case c.SCI == cascadeIRQ || c.SCI >= isaIRQs:
		return bad("SCI", "IRQ %d is not a free ISA IRQ", c.SCI)
	}
	return nil
}

// Build lays the floating pointer out at RegionBase with the
// configuration table right after it, and returns the bytes to copy
// there.
func Build(cfg Config) ([]byte, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	ioapicID := byte(cfg.CPUs) // the first APIC ID no vCPU has

	t := make([]byte, mpcHeaderLen)
	copy(t, mpcSignature)
	t[mpcSpecRev] = specRev
	copy(t[mpcOEMID:], oemID)
	copy(t[mpcProductID:], productID)
	le.PutUint32(t[mpcLAPICAddr:], cfg.LAPICAddr)
	entries := 0
	for id := 0; id < cfg.CPUs; id++ {
		flags := byte(cpuEnabled)
		if id == bspAPICID {
			flags |= cpuBSP
		}
		t = append(t, entryProcessor, byte(id), lapicVersion, flags)
		t = le.AppendUint32(t, cpuSignature)
		t = le.AppendUint32(t, cpuFeatures)
		t = append(t, make([]byte, 8)...) // reserved
		entries++
	}
	t = append(t, entryBus, isaBusID)
	t = append(t, isaBusType...)
	t = append(t, entryIOAPIC, ioapicID, ioapicVersion, ioapicEnabled)
	t = le.AppendUint32(t, cfg.IOAPICAddr)
	entries += 2
	for irq := byte(0); irq < isaIRQs; irq++ {
		pin, flags := irq, uint16(flagsConforming)
		switch {
		case irq == cascadeIRQ:
			continue
		case irq == pitIRQ:
			pin = pitPin
		case irq == cfg.SCI:
			flags = flagsActiveHigh | flagsLevel
		}
		t = append(t, entryIOInt, intINT)
		t = le.AppendUint16(t, flags)
		t = append(t, isaBusID, irq, ioapicID, pin)
		entries++
	}
	local := func(kind, dest, lint byte) {
		t = append(t, entryLocalInt, kind)
		t = le.AppendUint16(t, flagsConforming)
		t = append(t, isaBusID, noSourceIRQ, dest, lint)
		entries++
	}
	local(intExtINT, bspAPICID, lint0)
	local(intNMI, allLAPICs, lint1)
	le.PutUint16(t[mpcLength:], uint16(len(t)))
	le.PutUint16(t[mpcEntryCount:], uint16(entries))
	t[mpcChecksum] = checksum(t)

	f := make([]byte, mpfLen, uint64(mpfLen)+uint64(len(t)))
	copy(f, mpfSignature)
	le.PutUint32(f[mpfPhysPtr:], uint32(RegionBase)+mpfLen)
	f[mpfLength] = mpfLen / 16
	f[mpfSpecRev] = specRev
	f[mpfChecksum] = checksum(f)
	return append(f, t...), nil
}

// Write builds the table and copies it to RegionBase in mem.
func Write(mem *memory.Memory, cfg Config) error {
	b, err := Build(cfg)
	if err != nil {
		return err
	}
	if err := mem.WriteAt(b, RegionBase); err != nil {
		return fmt.Errorf("mptable: writing %d bytes at %#x: %w", len(b), uint64(RegionBase), err)
	}
	return nil
}

// checksum returns the byte that makes the sum of b plus it zero.
func checksum(b []byte) byte {
	var sum byte
	for _, v := range b {
		sum += v
	}
	return -sum
}
