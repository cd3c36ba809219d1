package rtc

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a host clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// hostTime is a Thursday afternoon in a leap year, half-way into a second.
var hostTime = time.Date(2024, time.February, 29, 13, 5, 9, 500_000_000, time.UTC)

func newRTC(t testing.TB, at time.Time) (*RTC, *fakeClock) {
	t.Helper()
	c := &fakeClock{t: at}
	return New(c.now), c
}

func get(r *RTC, idx byte) byte {
	r.Write(offIndex, []byte{idx})
	b := []byte{0}
	r.Read(offData, b)
	return b[0]
}

func set(r *RTC, idx, v byte) {
	r.Write(offIndex, []byte{idx})
	r.Write(offData, []byte{v})
}

// guestDate reads the time as Linux's mc146818_get_time does: wait out
// UIP, read the fields, and retry if the seconds moved meanwhile; then
// decode per register B. It is what the guest's date shows at boot.
func guestDate(t *testing.T, r *RTC) time.Time {
	t.Helper()
	require.Zero(t, get(r, regD)&0x40, "register D bit 6 must read 0")
	for range 100 {
		sec := get(r, regSeconds)
		if get(r, regA)&aUIP != 0 {
			continue
		}
		fields := map[byte]byte{regSeconds: sec}
		for _, idx := range []byte{regMinutes, regHours, regDay, regMonth, regYear, regCentury} {
			fields[idx] = get(r, idx)
		}
		ctrl := get(r, regB)
		if get(r, regA)&aUIP != 0 || get(r, regSeconds) != sec {
			continue
		}
		num := func(v byte) int {
			if ctrl&bDM != 0 {
				return int(v)
			}
			return int(v>>4)*10 + int(v&0xf)
		}
		hour := num(fields[regHours])
		if ctrl&b24Hr == 0 {
			hour = num(fields[regHours]&^hourPM) % 12
			if fields[regHours]&hourPM != 0 {
				hour += 12
			}
		}
		return time.Date(num(fields[regCentury])*100+num(fields[regYear]), time.Month(num(fields[regMonth])),
			num(fields[regDay]), hour, num(fields[regMinutes]), num(sec), 0, time.UTC)
	}
	t.Fatal("UIP stuck")
	return time.Time{}
}

var modes = []struct {
	name string
	b    byte
}{
	{"BCD 24h", b24Hr},
	{"BCD 12h", 0},
	{"binary 24h", bDM | b24Hr},
	{"binary 12h", bDM},
}

func TestTimeRegisters(t *testing.T) {
	tests := []struct {
		mode byte
		want map[byte]byte
	}{
		{b24Hr, map[byte]byte{regSeconds: 0x09, regMinutes: 0x05, regHours: 0x13, regWeekday: 5,
			regDay: 0x29, regMonth: 0x02, regYear: 0x24, regCentury: 0x20}},
		{0, map[byte]byte{regSeconds: 0x09, regMinutes: 0x05, regHours: hourPM | 0x01, regWeekday: 5,
			regDay: 0x29, regMonth: 0x02, regYear: 0x24, regCentury: 0x20}},
		{bDM | b24Hr, map[byte]byte{regSeconds: 9, regMinutes: 5, regHours: 13, regWeekday: 5,
			regDay: 29, regMonth: 2, regYear: 24, regCentury: 20}},
		{bDM, map[byte]byte{regSeconds: 9, regMinutes: 5, regHours: hourPM | 1, regWeekday: 5,
			regDay: 29, regMonth: 2, regYear: 24, regCentury: 20}},
	}
	for i, tt := range tests {
		t.Run(modes[i].name, func(t *testing.T) {
			r, _ := newRTC(t, hostTime)
			set(r, regB, tt.mode)
			for idx, want := range tt.want {
				assert.Equal(t, want, get(r, idx), "register %#x", idx)
			}
		})
	}
}

func TestHours12(t *testing.T) {
	tests := []struct {
		hour    int
		bcd     byte
		binary  byte
		display string
	}{
		{0, 0x12, 12, "12 AM"},
		{1, 0x01, 1, "1 AM"},
		{11, 0x11, 11, "11 AM"},
		{12, hourPM | 0x12, hourPM | 12, "12 PM"},
		{23, hourPM | 0x11, hourPM | 11, "11 PM"},
	}
	for _, tt := range tests {
		t.Run(tt.display, func(t *testing.T) {
			at := time.Date(2024, 1, 1, tt.hour, 0, 0, 0, time.UTC)
			r, _ := newRTC(t, at)
			set(r, regB, 0)
			assert.Equal(t, tt.bcd, get(r, regHours))
			assert.Equal(t, at, guestDate(t, r))
			set(r, regB, bDM)
			assert.Equal(t, tt.binary, get(r, regHours))
			assert.Equal(t, at, guestDate(t, r))
		})
	}
}

// TestGuestDateIsHostTime decodes the registers as the guest does and
// compares with the host clock, in every mode, as the clock runs.
func TestGuestDateIsHostTime(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r, clock := newRTC(t, hostTime)
			set(r, regB, m.b)
			for range 50 {
				assert.Equal(t, clock.now().Truncate(time.Second), guestDate(t, r))
				clock.advance(37*time.Minute + 11*time.Second + 123*time.Millisecond)
			}
		})
	}
}

func TestCenturyRollover(t *testing.T) {
	r, clock := newRTC(t, time.Date(2099, 12, 31, 23, 59, 59, 0, time.UTC))
	assert.Equal(t, byte(0x20), get(r, regCentury))
	assert.Equal(t, byte(0x99), get(r, regYear))
	clock.advance(time.Second)
	assert.Equal(t, byte(0x21), get(r, regCentury))
	assert.Equal(t, byte(0x00), get(r, regYear))
	assert.Equal(t, byte(0x01), get(r, regMonth))
}

func TestUIP(t *testing.T) {
	tests := []struct {
		name    string
		nanos   int
		b       byte
		wantUIP bool
	}{
		{"mid-second", 500_000_000, bInitial, false},
		{"just after update", 0, bInitial, false},
		{"outside window", int(time.Second - uipWindow - 1), bInitial, false},
		{"inside window", int(time.Second - uipWindow), bInitial, true},
		{"last nanosecond", int(time.Second - 1), bInitial, true},
		{"updates halted", int(time.Second - 1), bInitial | bSET, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newRTC(t, time.Date(2024, 1, 1, 0, 0, 0, tt.nanos, time.UTC))
			set(r, regB, tt.b)
			assert.Equal(t, tt.wantUIP, get(r, regA)&aUIP != 0)
			assert.Equal(t, byte(aInitial), get(r, regA)&^aUIP)
		})
	}
}

func TestControlRegisters(t *testing.T) {
	r, _ := newRTC(t, hostTime)
	assert.Equal(t, byte(aInitial), get(r, regA))
	assert.Equal(t, byte(bInitial), get(r, regB))
	assert.Equal(t, byte(dVRT), get(r, regD))

	set(r, regA, 0xff)
	assert.Equal(t, byte(0x7f), get(r, regA), "UIP is read-only")
	set(r, regA, aInitial)
	set(r, regD, 0)
	assert.Equal(t, byte(dVRT), get(r, regD), "register D is read-only")
	set(r, regC, 0xff)
	assert.Equal(t, byte(0), get(r, regC), "register C is read-only")
}

func TestRegisterCUpdateFlag(t *testing.T) {
	r, clock := newRTC(t, hostTime)
	assert.Equal(t, byte(0), get(r, regC), "no update yet")
	clock.advance(time.Second)
	assert.Equal(t, byte(cUF), get(r, regC))
	assert.Equal(t, byte(0), get(r, regC), "reading clears")

	set(r, regB, bInitial|bUIE)
	clock.advance(3 * time.Second)
	assert.Equal(t, byte(cIRQF|cUF), get(r, regC))
	assert.Equal(t, byte(0), get(r, regC))
}

// TestSetTimeLikeLinux sets the time as mc146818_set_time does: SET, then
// year, month, day, hours, minutes, seconds, then SET cleared. From Jan 31
// the month write makes "April 31", which only comes out right because the
// fields are latched until SET clears rather than applied one by one.
func TestSetTimeLikeLinux(t *testing.T) {
	start := time.Date(2024, time.January, 31, 8, 0, 0, 0, time.UTC)
	target := time.Date(2031, time.April, 15, 22, 58, 7, 0, time.UTC)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r, clock := newRTC(t, start)
			set(r, regB, m.b)
			probe := New(func() time.Time { return target }) // encodes target in the same mode
			set(probe, regB, m.b)

			set(r, regB, m.b|bSET)
			for _, idx := range []byte{regCentury, regYear, regMonth, regDay, regHours, regMinutes, regSeconds} {
				set(r, idx, get(probe, idx))
			}
			clock.advance(5 * time.Second) // halted: the latched time does not move
			assert.Equal(t, get(probe, regSeconds), get(r, regSeconds))
			set(r, regB, m.b)

			assert.Equal(t, target, guestDate(t, r))
			assert.Equal(t, byte(3), get(r, regWeekday), "Tuesday, derived from the date")
			clock.advance(90 * time.Second)
			assert.Equal(t, target.Add(90*time.Second), guestDate(t, r), "the set clock runs with the host")
		})
	}
}

func TestWriteWhileRunning(t *testing.T) {
	r, clock := newRTC(t, hostTime)
	set(r, regMinutes, 0x45)
	want := time.Date(2024, time.February, 29, 13, 45, 9, 0, time.UTC)
	assert.Equal(t, want, guestDate(t, r))
	clock.advance(time.Hour)
	assert.Equal(t, want.Add(time.Hour), guestDate(t, r))
}

func TestGarbageTimeDoesNotPanic(t *testing.T) {
	for _, m := range modes {
		for _, v := range []byte{0x00, 0x7f, 0x80, 0xff} {
			r, _ := newRTC(t, hostTime)
			set(r, regB, m.b|bSET)
			for _, idx := range timeRegs {
				set(r, idx, v)
			}
			assert.NotPanics(t, func() {
				set(r, regB, m.b)
				for _, idx := range timeRegs {
					get(r, idx)
				}
				get(r, regA)
				get(r, regC)
			}, "%s %#x", m.name, v)
		}
	}
}

func TestCMOSRAM(t *testing.T) {
	r, _ := newRTC(t, hostTime)
	special := map[byte]bool{regA: true, regB: true, regC: true, regD: true}
	for _, idx := range timeRegs {
		special[idx] = true
	}
	for idx := range byte(128) {
		if special[idx] {
			continue
		}
		set(r, idx, idx^0xa5)
	}
	for idx := range byte(128) {
		if special[idx] {
			continue
		}
		assert.Equal(t, idx^0xa5, get(r, idx), "index %#x", idx)
	}
}

func TestIndexMasking(t *testing.T) {
	r, _ := newRTC(t, hostTime)
	set(r, 0x80|0x20, 0x42) // NMI-mask bit set, as Linux's CMOS_READ does
	assert.Equal(t, byte(0x42), get(r, 0x20))
	assert.Equal(t, byte(0x42), get(r, 0xa0))
	assert.Equal(t, byte(dVRT), get(r, 0x80|regD))
	b := []byte{0}
	r.Read(offIndex, b)
	assert.Equal(t, byte(0xff), b[0], "the index port is write-only")
}

func TestAccessWidthsAndOffsets(t *testing.T) {
	for off := uint64(0); off < 16; off++ {
		for _, width := range []int{1, 2, 4, 8} {
			r, _ := newRTC(t, hostTime)
			set(r, 0x40, 0x11)
			data := bytes.Repeat([]byte{0x40}, width)
			assert.NotPanics(t, func() {
				r.Write(off, data)
				r.Read(off, data)
			}, "offset %d width %d", off, width)
			if width != 1 || off != offData {
				assert.Equal(t, bytes.Repeat([]byte{0xff}, width), data, "offset %d width %d", off, width)
			}
			want := byte(0x11)
			if width == 1 && off == offData {
				want = 0x40
			}
			assert.Equal(t, want, get(r, 0x40), "offset %d width %d", off, width)
		}
	}
}

func TestConcurrent(t *testing.T) {
	r := New(time.Now)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 500 {
				set(r, byte(0x40+i), byte(j))
				get(r, regSeconds)
				get(r, regA)
			}
		})
	}
	wg.Wait()
}
