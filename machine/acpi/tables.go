package acpi

import (
	"encoding/binary"
	"fmt"

	"github.com/gvmm-dev/gvmm/devices/pm"
	"github.com/gvmm-dev/gvmm/machine/acpi/aml"
	"github.com/gvmm-dev/gvmm/memory"
)

// Identification written into every table header.
const (
	oemID       = "GVMM  " // 6 bytes
	oemTablePfx = "GVMM"   // + the 4-byte signature = 8-byte OEM table ID
	creatorID   = "GVMM"
	oemRevision = 1
)

// System description table header (ACPI 6.5, 5.2.6).
const (
	hdrLength   = 4
	hdrRevision = 8
	hdrChecksum = 9
	hdrOEMID    = 10
	hdrOEMTable = 16
	hdrOEMRev   = 24
	hdrCreator  = 28
	hdrCreatRev = 32
	headerLen   = 36
)

// checksum returns the byte that makes the sum of b plus it zero.
func checksum(b []byte) byte {
	var sum byte
	for _, v := range b {
		sum += v
	}
	return -sum
}

// sealSDT fills in the header that every table builder leaves zeroed in
// its first headerLen bytes, then the checksum, which covers all of it.
func sealSDT(t []byte, sig string, rev uint8) []byte {
	copy(t, sig)
	binary.LittleEndian.PutUint32(t[hdrLength:], uint32(len(t)))
	t[hdrRevision] = rev
	t[hdrChecksum] = 0
	copy(t[hdrOEMID:], oemID)
	copy(t[hdrOEMTable:], oemTablePfx+sig)
	binary.LittleEndian.PutUint32(t[hdrOEMRev:], oemRevision)
	copy(t[hdrCreator:], creatorID)
	binary.LittleEndian.PutUint32(t[hdrCreatRev:], oemRevision)
	t[hdrChecksum] = checksum(t)
	return t
}

// RSDP (ACPI 6.5, 5.2.5.3), revision 2 with only an XSDT: Linux uses the
// XSDT whenever the revision is 2 or more and its address is set.
const (
	rsdpSignature  = "RSD PTR "
	rsdpChecksum   = 8
	rsdpOEMID      = 9
	rsdpRevision   = 15
	rsdpLength     = 20
	rsdpV1Len      = 20 // bytes covered by the first checksum
	rsdpXSDT       = 24
	rsdpExtChecksm = 32
	rsdpLen        = 36
)

func buildRSDP(xsdt memory.GuestAddress) []byte {
	r := make([]byte, rsdpLen)
	copy(r, rsdpSignature)
	copy(r[rsdpOEMID:], oemID)
	r[rsdpRevision] = 2
	binary.LittleEndian.PutUint32(r[rsdpLength:], rsdpLen)
	binary.LittleEndian.PutUint64(r[rsdpXSDT:], uint64(xsdt))
	r[rsdpChecksum] = checksum(r[:rsdpV1Len])
	r[rsdpExtChecksm] = checksum(r)
	return r
}

func buildXSDT(entries []memory.GuestAddress) []byte {
	t := make([]byte, headerLen+8*len(entries))
	for i, a := range entries {
		binary.LittleEndian.PutUint64(t[headerLen+8*i:], uint64(a))
	}
	return sealSDT(t, "XSDT", 1)
}

// FACS (ACPI 6.5, 5.2.10): required by a full (not hardware-reduced)
// FADT, for the global lock and waking vector; it has no checksum.
const (
	facsLen     = 64
	facsAlign   = 64
	facsLength  = 4
	facsVersion = 32
)

func buildFACS() []byte {
	f := make([]byte, facsLen)
	copy(f, "FACS")
	binary.LittleEndian.PutUint32(f[facsLength:], facsLen)
	f[facsVersion] = 2
	return f
}

// Generic Address Structure (ACPI 6.5, 5.2.3.2).
const (
	gasLen       = 12
	gasSystemIO  = 1
	gasAccByte   = 1
	gasAccWord   = 2
	gasBitWidth  = 1
	gasAccess    = 3
	gasAddress   = 4
	bitsPerByte  = 8
	resetRegBits = 8 // Linux only honours an 8-bit reset register
)

func putGAS(b []byte, space, bits, access uint8, addr uint64) {
	b[0] = space
	b[gasBitWidth] = bits
	b[gasAccess] = access
	binary.LittleEndian.PutUint64(b[gasAddress:], addr)
}

// FADT revision 6.3 layout (ACPI 6.5, 5.2.9, table 5.9).
const (
	fadtFirmwareCtrl = 36
	fadtDSDT         = 40
	fadtSCIInt       = 46
	fadtSMICmd       = 48
	fadtPM1aEvtBlk   = 56
	fadtPM1aCntBlk   = 64
	fadtPM1EvtLen    = 88
	fadtPM1CntLen    = 89
	fadtPLvl2Lat     = 96
	fadtPLvl3Lat     = 98
	fadtIAPCBootArch = 109
	fadtFlags        = 112
	fadtResetReg     = 116
	fadtResetValue   = 128
	fadtMinorVersion = 131
	fadtXFirmware    = 132
	fadtXDSDT        = 140
	fadtXPM1aEvtBlk  = 148
	fadtXPM1aCntBlk  = 172
	fadtLen          = 276

	fadtRevision = 6
	fadtMinor    = 3

	// C2/C3 latencies above 100/1000 µs mean "not supported".
	fadtNoC2 = 0x0fff
	fadtNoC3 = 0x0fff
)

// FADT Flags (table 5.10). PWR_BUTTON (bit 4) stays clear: the power
// button is the fixed-feature one in PM1_STS/PM1_EN.
const (
	fadtWBINVD      = 1 << 0
	fadtProcC1      = 1 << 2
	fadtSlpButton   = 1 << 5 // no fixed-feature sleep button
	fadtFixRTC      = 1 << 6 // no RTC wake status in PM1_STS
	fadtResetRegSup = 1 << 10
)

// IA-PC boot architecture flags (table 5.11).
const (
	bootLegacyDevices = 1 << 0 // ISA devices (UART, RTC) present
	boot8042          = 1 << 1 // i8042 present, so Linux probes it
	bootNoVGA         = 1 << 2 // no VGA: keeps vgacon off guest RAM at 0xb8000
)

func buildFADT(cfg *Config, facs, dsdt memory.GuestAddress) []byte {
	t := make([]byte, fadtLen)
	le := binary.LittleEndian
	le.PutUint32(t[fadtFirmwareCtrl:], uint32(facs))
	le.PutUint32(t[fadtDSDT:], uint32(dsdt))
	le.PutUint16(t[fadtSCIInt:], uint16(cfg.PM.SCI))
	// SMI_CMD stays 0: no SMM, the machine is always in ACPI mode and
	// PM1_CNT.SCI_EN reads 1.
	evt := uint32(cfg.PM.Port) + pm.EventBlockOffset
	cnt := uint32(cfg.PM.Port) + pm.ControlBlockOffset
	le.PutUint32(t[fadtPM1aEvtBlk:], evt)
	le.PutUint32(t[fadtPM1aCntBlk:], cnt)
	t[fadtPM1EvtLen] = pm.EventBlockLen
	t[fadtPM1CntLen] = pm.ControlBlockLen
	le.PutUint16(t[fadtPLvl2Lat:], fadtNoC2)
	le.PutUint16(t[fadtPLvl3Lat:], fadtNoC3)
	le.PutUint16(t[fadtIAPCBootArch:], bootLegacyDevices|boot8042|bootNoVGA)
	flags := uint32(fadtWBINVD | fadtProcC1 | fadtSlpButton | fadtFixRTC)
	if r := cfg.Reset; r != nil {
		flags |= fadtResetRegSup
		putGAS(t[fadtResetReg:fadtResetReg+gasLen], gasSystemIO, resetRegBits, gasAccByte, uint64(r.Port))
		t[fadtResetValue] = r.Value
	}
	le.PutUint32(t[fadtFlags:], flags)
	t[fadtMinorVersion] = fadtMinor
	// The X_ fields repeat the 32-bit ones; ACPICA prefers them and warns
	// only when the two differ.
	le.PutUint64(t[fadtXFirmware:], uint64(facs))
	le.PutUint64(t[fadtXDSDT:], uint64(dsdt))
	putGAS(t[fadtXPM1aEvtBlk:fadtXPM1aEvtBlk+gasLen], gasSystemIO, pm.EventBlockLen*bitsPerByte, gasAccWord, uint64(evt))
	putGAS(t[fadtXPM1aCntBlk:fadtXPM1aCntBlk+gasLen], gasSystemIO, pm.ControlBlockLen*bitsPerByte, gasAccWord, uint64(cnt))
	return sealSDT(t, "FACP", fadtRevision)
}

// MADT (ACPI 6.5, 5.2.12), revision 5 (ACPI 6.3+).
const (
	madtRevision  = 5
	madtLAPICAddr = 36
	madtFlags     = 40
	madtEntries   = 44
	madtPCATCompt = 1 << 0 // dual 8259 PICs present (KVM emulates them)

	madtTypeLAPIC    = 0
	madtTypeIOAPIC   = 1
	madtTypeOverride = 2
	madtTypeLAPICNMI = 4
	madtLAPICEnabled = 1 << 0

	// KVM's in-kernel I/O APIC resets its ID register to 0; the MADT
	// must report the ID the hardware has.
	ioapicID = 0
	// Processor UID 0xff in a Local APIC NMI entry means all processors.
	allProcessors = 0xff
	nmiLINT       = 1

	// MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2.
	intiConforming = 0
	intiActiveHigh = 1 << 0
	intiLevel      = 3 << 2

	// The PIT's IRQ 0 is wired to I/O APIC pin 2, as on every PC.
	pitIRQ = 0
	pitGSI = 2
)

func buildMADT(cfg *Config) []byte {
	le := binary.LittleEndian
	t := make([]byte, madtEntries)
	le.PutUint32(t[madtLAPICAddr:], cfg.LAPICAddr)
	le.PutUint32(t[madtFlags:], madtPCATCompt)
	for id := 0; id < cfg.CPUs; id++ {
		// UID and APIC ID coincide; the DSDT declares no processor objects.
		t = append(t, madtTypeLAPIC, 8, byte(id), byte(id))
		t = le.AppendUint32(t, madtLAPICEnabled)
	}
	t = append(t, madtTypeIOAPIC, 12, ioapicID, 0)
	t = le.AppendUint32(t, cfg.IOAPICAddr)
	t = le.AppendUint32(t, 0) // GSI base
	override := func(irq uint8, gsi uint32, flags uint16) {
		t = append(t, madtTypeOverride, 10, 0 /* ISA */, irq)
		t = le.AppendUint32(t, gsi)
		t = le.AppendUint16(t, flags)
	}
	// Conforming to the ISA bus: edge-triggered, active high.
	override(pitIRQ, pitGSI, intiConforming)
	// The SCI is level-triggered, active high (as QEMU declares it),
	// rather than the active-low default Linux assumes without an entry.
	override(cfg.PM.SCI, uint32(cfg.PM.SCI), intiActiveHigh|intiLevel)
	t = append(t, madtTypeLAPICNMI, 6, allProcessors)
	t = le.AppendUint16(t, intiConforming)
	t = append(t, nmiLINT)
	return sealSDT(t, "APIC", madtRevision)
}

// MCFG (PCI Firmware 3.2, 4.1.2): one allocation for segment 0.
const (
	mcfgEntries  = 44 // after 8 reserved bytes
	mcfgEntryLen = 16
)

func buildMCFG(m *MCFGConfig) []byte {
	t := make([]byte, mcfgEntries+mcfgEntryLen)
	e := t[mcfgEntries:]
	binary.LittleEndian.PutUint64(e, m.Base)
	// Segment (bytes 8-9) is 0.
	e[10] = m.StartBus
	e[11] = m.EndBus
	return sealSDT(t, "MCFG", 1)
}

// DSDT revision 2 makes AML integers 64 bits wide.
const dsdtRevision = 2

// serialPorts is the number of I/O ports of a 16550.
const serialPorts = 8

func buildDSDT(cfg *Config) ([]byte, error) {
	sb := make([]aml.Term, 0, len(cfg.Serial)+len(cfg.Devices))
	for i, s := range cfg.Serial {
		sb = append(sb, aml.Device(fmt.Sprintf("COM%d", i+1),
			aml.Name("_HID", aml.EISAID("PNP0501")),
			aml.Name("_UID", aml.Integer(i+1)),
			aml.Name("_CRS", aml.ResourceTemplate(
				aml.IO(s.Port, s.Port, 1, serialPorts),
				aml.IRQNoFlags(s.IRQ),
			)),
		))
	}
	sb = append(sb, cfg.Devices...)
	body := []aml.Term{
		// \_S5: SLP_TYPa, SLP_TYPb, reserved, reserved.
		aml.Name(`\_S5`, aml.Package(aml.Integer(pm.SleepTypeS5), aml.Integer(pm.SleepTypeS5), aml.Integer(0), aml.Integer(0))),
		aml.Scope(`\_SB`, sb...),
	}
	t := make([]byte, headerLen)
	for _, term := range body {
		var err error
		if t, err = term.AppendAML(t); err != nil {
			return nil, fmt.Errorf("acpi: DSDT: %w", err)
		}
	}
	return sealSDT(t, "DSDT", dsdtRevision), nil
}
