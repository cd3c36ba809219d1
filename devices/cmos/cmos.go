// Package cmos emulates the MC146818 real-time clock and its battery-backed
// RAM at the legacy PC ports 0x70 (index) and 0x71 (data).
//
// The clock is the host clock plus an offset: the guest reads the host's
// time in UTC and, when it sets the clock (hwclock -w), only the offset
// changes. There is no update cycle, no periodic, alarm or update
// interrupt: UIP always reads 0 and register C always reads 0.
//
// Register layout, relative to the device base:
//
//	+0 index: bits 0-6 select a register; bit 7 is the NMI-disable bit
//	   of the PC chipset, which is masked off. Reads 0xff.
//	+1 data: the selected register.
package cmos

import (
	"sync"
	"time"

	"github.com/gvmm-dev/gvmm/devices"
)

// Layout of the port range.
const (
	// DefaultBase is the legacy PC port of the index register.
	DefaultBase uint16 = 0x70
	Size               = 2

	regIndex = 0
	regData  = 1

	indexMask = 0x7f // bit 7 disables NMI on a PC, it is not an index bit
	ramSize   = 128
)

// Register indexes. The alarm registers (0x01, 0x03, 0x05) and everything
// above 0x0D other than the century are plain RAM.
const (
	idxSeconds = 0x00
	idxMinutes = 0x02
	idxHours   = 0x04
	idxWeekday = 0x06 // 1 = Sunday
	idxDay     = 0x07
	idxMonth   = 0x08
	idxYear    = 0x09 // two digits
	idxA       = 0x0A
	idxB       = 0x0B
	idxC       = 0x0C
	idxD       = 0x0D
	idxCentury = 0x32 // where the ACPI FADT's CENTURY field points
)

// Register A bits.
const (
	aUIP = 1 << 7 // update in progress; there is no update cycle to report

	// aDefault selects the 32.768 kHz time base and a 1024 Hz periodic
	// rate, as firmware leaves it.
	aDefault = 0x26
)

// Register B bits.
const (
	bSet    = 1 << 7 // clock frozen while the guest sets it
	b24Hour = 1 << 1
	bBinary = 1 << 2 // DM: binary instead of BCD

	bDefault = b24Hour
)

// Register D bits.
const (
	dValidRAM = 1 << 7 // the battery is good
)

// hourPM marks the afternoon in 12-hour mode.
const hourPM = 1 << 7

// RTC is the clock and its RAM. It is safe for concurrent use.
type RTC struct {
	now func() time.Time

	mu     sync.Mutex
	index  byte
	ram    [ramSize]byte // registers A and B and the plain RAM bytes
	offset time.Duration // guest time minus host time
	// frozen is the clock while bSet is on: reads see it and writes edit
	// it, and clearing bSet commits it, so that a guest setting the date
	// field by field never passes through an invalid date such as 31
	// February that the next field would have fixed.
	frozen clock
}

var _ devices.Device = (*RTC)(nil)

// New returns an RTC reading now (the host clock, normally time.Now).
func New(now func() time.Time) *RTC {
	r := &RTC{now: now}
	r.ram[idxA] = aDefault
	r.ram[idxB] = bDefault
	return r
}

// Read implements devices.Device. Only byte accesses to the data port are
// decoded; anything else reads 0xff.
func (r *RTC) Read(offset uint64, data []byte) {
	if len(data) != 1 || offset != regData {
		fill(data)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	data[0] = r.readLocked(r.index)
}

// Write implements devices.Device. Only byte accesses are decoded;
// anything else is ignored.
func (r *RTC) Write(offset uint64, data []byte) {
	if len(data) != 1 || offset >= Size {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if offset == regIndex {
		r.index = data[0] & indexMask
		return
	}
	r.writeLocked(r.index, data[0])
}

// clock is a broken-down time as the guest writes it: fields may be out
// of range (31 February, minute 99) until the guest is done setting them.
type clock struct {
	year, month, day, hour, minute, sec, nsec int
}

func clockOf(t time.Time) clock {
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	return clock{year, int(month), day, hour, minute, sec, t.Nanosecond()}
}

// time normalises c (time.Date accepts any field values), so whatever a
// hostile guest writes the result is a valid time.
func (c clock) time() time.Time {
	return time.Date(c.year, time.Month(c.month), c.day, c.hour, c.minute, c.sec, c.nsec, time.UTC)
}

// clockLocked is the time the guest sees.
func (r *RTC) clockLocked() clock {
	if r.ram[idxB]&bSet != 0 {
		return r.frozen
	}
	return clockOf(r.now().UTC().Add(r.offset))
}

// commitLocked makes c the guest's time from now on.
func (r *RTC) commitLocked(c clock) {
	r.offset = c.time().Sub(r.now().UTC())
}

func (r *RTC) readLocked(idx byte) byte {
	c := r.clockLocked()
	switch idx {
	case idxSeconds:
		return r.encode(c.sec)
	case idxMinutes:
		return r.encode(c.minute)
	case idxHours:
		return r.encodeHour(c.hour)
	case idxWeekday:
		return r.encode(int(c.time().Weekday()) + 1)
	case idxDay:
		return r.encode(c.day)
	case idxMonth:
		return r.encode(c.month)
	case idxYear:
		return r.encode(c.year % 100)
	case idxCentury:
		return r.encode(c.year / 100)
	case idxA:
		return r.ram[idxA] &^ aUIP
	case idxC:
		// No interrupt is ever flagged, so there is nothing to clear.
		return 0
	case idxD:
		return dValidRAM
	}
	return r.ram[idx&indexMask]
}

func (r *RTC) writeLocked(idx, v byte) {
	switch idx {
	case idxSeconds, idxMinutes, idxHours, idxDay, idxMonth, idxYear, idxCentury:
		c := r.setField(r.clockLocked(), idx, v)
		if r.ram[idxB]&bSet != 0 {
			r.frozen = c
			return
		}
		// Without SET each field takes effect alone, and an invalid
		// intermediate date is normalised; Linux and firmware use SET.
		r.commitLocked(c)
	case idxWeekday:
		// Derived from the date; a guest writing it changes nothing.
	case idxA:
		r.ram[idxA] = v &^ aUIP
	case idxB:
		was := r.ram[idxB]
		switch {
		case was&bSet == 0 && v&bSet != 0:
			r.frozen = r.clockLocked()
		case was&bSet != 0 && v&bSet == 0:
			r.commitLocked(r.frozen)
		}
		r.ram[idxB] = v
	case idxC, idxD:
		// Read-only.
	default:
		r.ram[idx&indexMask] = v
	}
}

// setField returns c with the field at idx replaced by the written value,
// decoded in the current format.
func (r *RTC) setField(c clock, idx, v byte) clock {
	switch idx {
	case idxSeconds:
		// The guest means the second has just begun.
		c.sec, c.nsec = r.decode(v), 0
	case idxMinutes:
		c.minute = r.decode(v)
	case idxHours:
		c.hour = r.decodeHour(v)
	case idxDay:
		c.day = r.decode(v)
	case idxMonth:
		c.month = r.decode(v)
	case idxYear:
		c.year = c.year/100*100 + r.decode(v)
	case idxCentury:
		c.year = r.decode(v)*100 + c.year%100
	}
	return c
}

func (r *RTC) encode(n int) byte {
	if r.ram[idxB]&bBinary != 0 {
		return byte(n)
	}
	return byte(n/10%10<<4 | n%10)
}

func (r *RTC) decode(v byte) int {
	if r.ram[idxB]&bBinary != 0 {
		return int(v)
	}
	return int(v>>4)*10 + int(v&0x0f)
}

// encodeHour encodes 0-23 as the guest expects: as is in 24-hour mode,
// else 12, 1-11 with hourPM in the afternoon.
func (r *RTC) encodeHour(h int) byte {
	if r.ram[idxB]&b24Hour != 0 {
		return r.encode(h)
	}
	var pm byte
	if h >= 12 {
		pm = hourPM
	}
	h %= 12
	if h == 0 {
		h = 12
	}
	return r.encode(h) | pm
}

func (r *RTC) decodeHour(v byte) int {
	if r.ram[idxB]&b24Hour != 0 {
		return r.decode(v)
	}
	h := r.decode(v&^hourPM) % 12
	if v&hourPM != 0 {
		h += 12
	}
	return h
}

func fill(data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}
