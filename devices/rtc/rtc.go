// Package rtc emulates the MC146818 real-time clock and CMOS RAM of a PC
// at ports 0x70 (index) and 0x71 (data).
//
// The clock is the host clock plus an offset: reads encode the current
// time, and time written by the guest (hwclock -w) becomes a new offset, so
// the guest's clock ticks with the host's. The time is kept in UTC.
//
// No interrupt is wired: periodic, alarm and update-ended interrupts are
// not raised and the alarm registers are plain RAM. Register C still
// reports the update-ended flag for guests that poll it. Because of that,
// firmware tables should not give the RTC an IRQ; Linux then falls back
// to polling for hwclock.
package rtc

import (
	"sync"
	"time"

	"github.com/gvmm-dev/gvmm/devices"
)

// DefaultBase is the index port on a PC; Size is the range the device
// decodes from there.
const (
	DefaultBase = 0x70
	Size        = 2
)

// Port offsets from the base.
const (
	offIndex = 0
	offData  = 1
)

// indexMask selects the register from an index-port write. Bit 7 masks NMI
// on real boards; no NMI comes from here, so it is dropped.
const indexMask = 0x7f

// Register indices.
const (
	regSeconds = 0x00
	regMinutes = 0x02
	regHours   = 0x04
	regWeekday = 0x06
	regDay     = 0x07
	regMonth   = 0x08
	regYear    = 0x09
	regA       = 0x0a
	regB       = 0x0b
	regC       = 0x0c
	regD       = 0x0d
	// regCentury is not an MC146818 register but the IBM-compatible CMOS
	// byte that ACPI's FADT century field conventionally points at.
	regCentury = 0x32
)

// timeRegs are the registers derived from the clock.
var timeRegs = [...]byte{regSeconds, regMinutes, regHours, regWeekday, regDay, regMonth, regYear, regCentury}

// Register A bits.
const (
	aUIP = 0x80 // update in progress: time registers are about to change
	// aInitial selects the 32.768 kHz time base (DV=010) and a 1024 Hz
	// periodic rate, as firmware leaves it.
	aInitial = 0x26
)

// Register B bits.
const (
	bSET  = 0x80 // updates halted so the time can be set
	bUIE  = 0x10 // update-ended interrupt enable
	bDM   = 0x04 // data mode: 1 binary, 0 BCD
	b24Hr = 0x02 // 24-hour mode; Linux's rtc-cmos requires it
	// bInitial is BCD, 24-hour, as firmware leaves it.
	bInitial = b24Hr
)

// Register C bits.
const (
	cIRQF = 0x80 // an enabled flag is set
	cUF   = 0x10 // an update cycle ended
)

// Register D bits.
const dVRT = 0x80 // valid RAM and time: the battery is fine

// hourPM marks the afternoon in the hours register in 12-hour mode.
const hourPM = 0x80

// uipWindow is how long UIP is set before each update: 244 µs with the
// 32.768 kHz time base, per the datasheet. A reader that waits for UIP to
// clear has at least that long to read a consistent time.
const uipWindow = 244 * time.Microsecond

// RTC is the MC146818 and its CMOS RAM. It is safe for concurrent use.
type RTC struct {
	now func() time.Time

	mu    sync.Mutex
	index byte
	// ram backs every register except C and D. The time registers hold
	// the latched time while SET halts updates; otherwise they are
	// computed from the clock.
	ram    [128]byte
	offset time.Duration // guest time minus host time
	// lastCSec is the guest's Unix second when register C was last read;
	// a later second means an update cycle ended in between.
	lastCSec int64
}

var _ devices.Device = (*RTC)(nil)

// New returns an RTC that reads the host time from now (time.Now outside
// tests).
func New(now func() time.Time) *RTC {
	r := &RTC{now: now}
	r.ram[regA] = aInitial
	r.ram[regB] = bInitial
	r.lastCSec = now().Unix()
	return r
}

// Read implements devices.Device. Only byte reads of the data port are
// decoded; the index port is write-only and, like anything else, reads as
// all-ones.
func (r *RTC) Read(offset uint64, data []byte) {
	if len(data) != 1 || offset != offData {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	data[0] = r.readReg(r.index)
}

// Write implements devices.Device. Accesses that are not single bytes to
// offsets 0 or 1 are ignored.
func (r *RTC) Write(offset uint64, data []byte) {
	if len(data) != 1 || offset >= Size {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if offset == offIndex {
		r.index = data[0] & indexMask
		return
	}
	r.writeReg(r.index, data[0])
}

func (r *RTC) guestTime() time.Time { return r.now().Add(r.offset).UTC() }

func (r *RTC) halted() bool { return r.ram[regB]&bSET != 0 }

func (r *RTC) readReg(idx byte) byte {
	switch {
	case isTimeReg(idx) && !r.halted():
		return r.encode(idx, r.guestTime())
	case idx == regA:
		v := r.ram[regA]
		if !r.halted() && r.guestTime().Nanosecond() >= int(time.Second-uipWindow) {
			v |= aUIP
		}
		return v
	case idx == regC:
		return r.readC()
	case idx == regD:
		return dVRT
	default:
		return r.ram[idx]
	}
}

// readC reports and clears the interrupt flags.
func (r *RTC) readC() byte {
	var v byte
	sec := r.guestTime().Unix()
	if sec != r.lastCSec && !r.halted() {
		v |= cUF
	}
	r.lastCSec = sec
	if v&cUF != 0 && r.ram[regB]&bUIE != 0 {
		v |= cIRQF
	}
	return v
}

func (r *RTC) writeReg(idx, v byte) {
	switch {
	case isTimeReg(idx):
		if r.halted() {
			r.ram[idx] = v
			return
		}
		// A write while the clock runs sets that field of the current time.
		r.latch()
		r.ram[idx] = v
		r.commit()
	case idx == regA:
		r.ram[regA] = v &^ aUIP
	case idx == regB:
		wasHalted := r.halted()
		r.ram[regB] = v
		switch {
		case !wasHalted && r.halted():
			r.latch()
		case wasHalted && !r.halted():
			r.commit()
		}
	case idx == regC, idx == regD:
		// Read-only.
	default:
		r.ram[idx] = v
	}
}

// latch freezes the current time into the time registers, in the current
// data mode.
func (r *RTC) latch() {
	t := r.guestTime()
	for _, idx := range timeRegs {
		r.ram[idx] = r.encode(idx, t)
	}
}

// commit makes the time in the time registers the guest's time, starting
// now. The weekday is derived from the date, so the guest's is ignored.
// Out-of-range fields normalize as time.Date does; the offset saturates
// for years the Duration cannot span.
func (r *RTC) commit() {
	field := func(idx byte) int { return r.decode(r.ram[idx]) }
	t := time.Date(
		field(regCentury)*100+field(regYear), time.Month(field(regMonth)), field(regDay),
		r.decodeHour(r.ram[regHours]), field(regMinutes), field(regSeconds), 0, time.UTC)
	r.offset = t.Sub(r.now())
}

// encode returns register idx's value for time t in the current mode.
func (r *RTC) encode(idx byte, t time.Time) byte {
	switch idx {
	case regSeconds:
		return r.encodeNum(t.Second())
	case regMinutes:
		return r.encodeNum(t.Minute())
	case regHours:
		return r.encodeHour(t.Hour())
	case regWeekday:
		return r.encodeNum(int(t.Weekday()) + 1) // 1 is Sunday
	case regDay:
		return r.encodeNum(t.Day())
	case regMonth:
		return r.encodeNum(int(t.Month()))
	case regYear:
		return r.encodeNum(t.Year() % 100)
	default: // regCentury
		return r.encodeNum(t.Year() / 100)
	}
}

// encodeNum encodes 0 <= n <= 99 in BCD or binary per register B.
func (r *RTC) encodeNum(n int) byte {
	if r.ram[regB]&bDM != 0 {
		return byte(n)
	}
	return byte(n/10%10<<4 | n%10)
}

// decode is encodeNum's inverse. Invalid BCD digits decode to whatever
// the arithmetic gives; the guest wrote garbage and gets a garbage time.
func (r *RTC) decode(v byte) int {
	if r.ram[regB]&bDM != 0 {
		return int(v)
	}
	return int(v>>4)*10 + int(v&0x0f)
}

func (r *RTC) encodeHour(h int) byte {
	if r.ram[regB]&b24Hr != 0 {
		return r.encodeNum(h)
	}
	h12 := h % 12
	if h12 == 0 {
		h12 = 12
	}
	v := r.encodeNum(h12)
	if h >= 12 {
		v |= hourPM
	}
	return v
}

func (r *RTC) decodeHour(v byte) int {
	if r.ram[regB]&b24Hr != 0 {
		return r.decode(v)
	}
	h := r.decode(v&^hourPM) % 12 // 12 AM is hour 0
	if v&hourPM != 0 {
		h += 12
	}
	return h
}

func isTimeReg(idx byte) bool {
	for _, t := range timeRegs {
		if idx == t {
			return true
		}
	}
	return false
}
