// Package pm emulates the ACPI fixed-hardware power-management registers
// that the FADT points at: the PM1a event block (PM1_STS, PM1_EN) and the
// PM1a control block (PM1_CNT), in one port-I/O range. It is what makes a
// guest's "poweroff" reach the VMM (a write of SLP_TYP=S5 with SLP_EN) and
// what delivers the ACPI power button to the guest.
//
// Register layout, relative to the device base (ACPI 6.5, 4.8.3):
//
//	+0 PM1_STS  16 bits, write 1 to clear
//	+2 PM1_EN   16 bits, read/write
//	+4 PM1_CNT  16 bits; SCI_EN always reads 1 (no SMM: SMI_CMD is 0)
//
// The FADT must declare PM1_EVT_LEN = EventBlockLen and PM1_CNT_LEN =
// ControlBlockLen at these offsets, and the DSDT's \_S5 must carry
// SleepTypeS5.
package pm

import (
	"encoding/binary"
	"log/slog"
	"sync"

	"github.com/gvmm-dev/gvmm/devices"
)

// Layout of the register block, for the FADT.
const (
	// DefaultBase is the port base gvmm uses (QEMU's ICH9 uses it too; it
	// is free of legacy ISA devices).
	DefaultBase uint16 = 0x600

	EventBlockOffset   = 0 // PM1a_EVT_BLK: PM1_STS then PM1_EN
	EventBlockLen      = 4
	ControlBlockOffset = 4 // PM1a_CNT_BLK: PM1_CNT
	ControlBlockLen    = 2
	Size               = ControlBlockOffset + ControlBlockLen

	// SleepTypeS5 is the SLP_TYP value that means soft-off; the DSDT's
	// \_S5 package must hand it to the guest.
	SleepTypeS5 = 5
)

// Register offsets.
const (
	regStatus  = EventBlockOffset
	regEnable  = EventBlockOffset + EventBlockLen/2
	regControl = ControlBlockOffset
)

// PM1_STS bits (ACPI 6.5, table 4.16).
const (
	stsTimer       = 1 << 0
	stsBusMaster   = 1 << 4
	stsGlobal      = 1 << 5
	stsPowerButton = 1 << 8
	stsSleepButton = 1 << 9
	stsRTC         = 1 << 10
	stsPCIeWake    = 1 << 14
	stsWake        = 1 << 15

	statusBits = stsTimer | stsBusMaster | stsGlobal | stsPowerButton | stsSleepButton | stsRTC | stsPCIeWake | stsWake
)

// PM1_EN bits (ACPI 6.5, table 4.17). The enable bit of each event sits
// at the same position as its status bit.
const (
	enTimer           = 1 << 0
	enGlobal          = 1 << 5
	enPowerButton     = 1 << 8
	enSleepButton     = 1 << 9
	enRTC             = 1 << 10
	enPCIeWakeDisable = 1 << 14

	// enableBits are stored as written. GBL_EN must stick even though
	// nothing sets GBL_STS, or Linux reports the Global Lock as broken.
	enableBits = enTimer | enGlobal | enPowerButton | enSleepButton | enRTC | enPCIeWakeDisable
	// sciEvents are the events that raise the SCI when status and enable
	// are both set (PCIEXP_WAKE_DIS has inverted sense and only wakes).
	sciEvents = enTimer | enGlobal | enPowerButton | enSleepButton | enRTC
)

// PM1_CNT bits (ACPI 6.5, table 4.18).
const (
	cntSCIEnable     = 1 << 0
	cntBusMasterRld  = 1 << 1
	cntSleepTypeMask = 7 << cntSleepTypeShift
	cntSleepEnable   = 1 << 13

	cntSleepTypeShift = 10

	// controlBits are stored as written; GBL_RLS and SLP_EN are
	// write-only and read as 0, SCI_EN is fixed at 1.
	controlBits = cntBusMasterRld | cntSleepTypeMask
)

// PM is the PM1a register block. It is safe for concurrent use.
//
// The SCI is level-triggered (active high, as the MADT's interrupt source
// override declares): it is asserted while any event has both its status
// and enable bit set. The device calls sci.Trigger when that condition
// becomes true; Linux's handler clears the status bit by writing 1, which
// de-asserts it. The machine should wire sci as a KVM irqfd with a
// resample fd and, on each resample (guest EOI), call Trigger again if
// SCIAsserted still reports true; a plain pulse on the line also works as
// long as the guest handles each event before the next one arrives.
type PM struct {
	sci      devices.Interrupt
	poweroff func()
	log      *slog.Logger

	mu         sync.Mutex
	status     uint16
	enable     uint16
	control    uint16
	poweredOff bool
	logged     uint8 // bit n set: sleep type n already logged
}

var _ devices.Device = (*PM)(nil)

// New returns a PM block in its reset state. poweroff is called once, from
// the vCPU thread that writes the S5 request, outside the device's lock;
// sci, poweroff and log must be non-nil.
func New(sci devices.Interrupt, poweroff func(), log *slog.Logger) *PM {
	return &PM{sci: sci, poweroff: poweroff, log: log}
}

// image returns the registers as the guest sees them.
func (p *PM) image() [Size]byte {
	var img [Size]byte
	binary.LittleEndian.PutUint16(img[regStatus:], p.status)
	binary.LittleEndian.PutUint16(img[regEnable:], p.enable)
	binary.LittleEndian.PutUint16(img[regControl:], p.control|cntSCIEnable)
	return img
}

// Read implements devices.Device. Any width at any offset works: bytes
// inside the block read the registers, bytes past it read 0xff.
func (p *PM) Read(offset uint64, data []byte) {
	p.mu.Lock()
	img := p.image()
	p.mu.Unlock()
	for i := range data {
		data[i] = 0xff
		if offset < Size && uint64(i) < Size-offset {
			data[i] = img[offset+uint64(i)]
		}
	}
}

// Write implements devices.Device. Bytes are merged into the 16-bit
// registers they cover; bytes past the block are ignored.
func (p *PM) Write(offset uint64, data []byte) {
	var val, mask [Size]byte
	for i := range data {
		if offset < Size && uint64(i) < Size-offset {
			val[offset+uint64(i)] = data[i]
			mask[offset+uint64(i)] = 0xff
		}
	}
	reg := func(b [Size]byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }

	p.mu.Lock()
	was := p.asserted()
	if m := reg(mask, regStatus); m != 0 {
		p.status &^= reg(val, regStatus) & m & statusBits
	}
	if m := reg(mask, regEnable); m != 0 {
		p.enable = (p.enable &^ m) | (reg(val, regEnable) & m & enableBits)
	}
	var sleep, off bool
	var typ uint16
	if m := reg(mask, regControl); m != 0 {
		v := (p.control &^ m) | (reg(val, regControl) & m)
		p.control = v & controlBits
		typ = (v & cntSleepTypeMask) >> cntSleepTypeShift
		sleep = v&cntSleepEnable != 0
		off = sleep && typ == SleepTypeS5 && !p.poweredOff
		p.poweredOff = p.poweredOff || off
	}
	raise := !was && p.asserted()
	logSleep := sleep && typ != SleepTypeS5 && p.logged&(1<<typ) == 0
	if logSleep {
		p.logged |= 1 << typ // once per type: the guest must not flood the log
	}
	p.mu.Unlock()

	switch {
	case off:
		p.log.Info("guest requested soft-off (S5)")
		p.poweroff()
	case logSleep:
		p.log.Warn("guest requested an unsupported sleep state; ignored", "slp_typ", typ)
	}
	// A register write has no caller to return the error to.
	if raise {
		if err := p.sci.Trigger(); err != nil {
			p.log.Error("raising SCI", "err", err)
		}
	}
}

// PressPowerButton latches a power-button press (PWRBTN_STS) and raises
// the SCI if the guest enabled the power-button event. It returns the
// interrupt's error, if any.
func (p *PM) PressPowerButton() error {
	p.mu.Lock()
	was := p.asserted()
	p.status |= stsPowerButton
	raise := !was && p.asserted()
	p.mu.Unlock()
	if raise {
		return p.sci.Trigger()
	}
	return nil
}

// SCIAsserted reports whether the SCI line is logically asserted: some
// event has both its status and enable bit set.
func (p *PM) SCIAsserted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asserted()
}

func (p *PM) asserted() bool { return p.status&p.enable&sciEvents != 0 }
