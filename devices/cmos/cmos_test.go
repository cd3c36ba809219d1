package cmos

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// host is the fixed host clock of the tests: Tuesday 2024-12-31 21:07:09
// UTC, in another zone to check the RTC reports UTC.
var host = time.Date(2024, 12, 31, 22, 7, 9, 500_000_000, time.FixedZone("CET", 3600))

func newRTC(now time.Time) *RTC {
	return New(func() time.Time { return now })
}

func get(r *RTC, idx byte) byte {
	r.Write(regIndex, []byte{idx})
	var b [1]byte
	r.Read(regData, b[:])
	return b[0]
}

func set(r *RTC, idx, v byte) {
	r.Write(regIndex, []byte{idx})
	r.Write(regData, []byte{v})
}

func TestReadTime(t *testing.T) {
	tests := []struct {
		name string
		b    byte
		now  time.Time
		want map[byte]byte
	}{
		{"BCD 24h", bDefault, host, map[byte]byte{
			idxSeconds: 0x09, idxMinutes: 0x07, idxHours: 0x21, idxWeekday: 0x03,
			idxDay: 0x31, idxMonth: 0x12, idxYear: 0x24, idxCentury: 0x20,
		}},
		{"binary 24h", b24Hour | bBinary, host, map[byte]byte{
			idxSeconds: 9, idxMinutes: 7, idxHours: 21, idxWeekday: 3,
			idxDay: 31, idxMonth: 12, idxYear: 24, idxCentury: 20,
		}},
		{"BCD 12h PM", 0, host, map[byte]byte{idxHours: hourPM | 0x09}},
		{"binary 12h PM", bBinary, host, map[byte]byte{idxHours: hourPM | 9}},
		{"12h midnight", 0, time.Date(2024, 1, 1, 0, 30, 0, 0, time.UTC), map[byte]byte{idxHours: 0x12}},
		{"12h noon", 0, time.Date(2024, 1, 1, 12, 30, 0, 0, time.UTC), map[byte]byte{idxHours: hourPM | 0x12}},
		{"12h morning", 0, time.Date(2024, 1, 1, 11, 0, 0, 0, time.UTC), map[byte]byte{idxHours: 0x11}},
		{"Sunday is 1", bDefault, time.Date(2024, 1, 7, 0, 0, 0, 0, time.UTC), map[byte]byte{idxWeekday: 1}},
		{"century 19", bDefault, time.Date(1999, 6, 1, 0, 0, 0, 0, time.UTC), map[byte]byte{idxYear: 0x99, idxCentury: 0x19}},
		{"century 21 binary", bDefault | bBinary, time.Date(2105, 6, 1, 0, 0, 0, 0, time.UTC), map[byte]byte{idxYear: 5, idxCentury: 21}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRTC(tt.now)
			set(r, idxB, tt.b)
			for idx, want := range tt.want {
				assert.Equal(t, want, get(r, idx), "register %#x", idx)
			}
		})
	}
}

func TestStatusRegisters(t *testing.T) {
	r := newRTC(host)
	assert.Equal(t, byte(aDefault), get(r, idxA))
	assert.Equal(t, byte(bDefault), get(r, idxB))
	assert.Equal(t, byte(0), get(r, idxC))
	assert.Equal(t, byte(dValidRAM), get(r, idxD))

	set(r, idxA, 0xff)
	assert.Equal(t, byte(0x7f), get(r, idxA), "divider bits kept, UIP reads clear")
	set(r, idxC, 0xff)
	set(r, idxD, 0x00)
	assert.Equal(t, byte(0), get(r, idxC), "C is read-only")
	assert.Equal(t, byte(dValidRAM), get(r, idxD), "D is read-only")
}

func TestSetTime(t *testing.T) {
	want := time.Date(2031, 2, 15, 13, 45, 30, 0, time.UTC)
	tests := []struct {
		name   string
		b      byte
		writes [][2]byte // register, value, in order
	}{
		{"BCD 24h as Linux does it, under SET", bDefault, [][2]byte{
			{idxB, bDefault | bSet},
			{idxYear, 0x31}, {idxMonth, 0x02}, {idxDay, 0x15},
			{idxHours, 0x13}, {idxMinutes, 0x45}, {idxSeconds, 0x30},
			{idxCentury, 0x20},
			{idxB, bDefault},
		}},
		{"binary 12h under SET", bBinary, [][2]byte{
			{idxB, bBinary | bSet},
			{idxYear, 31}, {idxMonth, 2}, {idxDay, 15},
			{idxHours, hourPM | 1}, {idxMinutes, 45}, {idxSeconds, 30},
			{idxB, bBinary},
		}},
		{"field by field without SET, day first", bDefault, [][2]byte{
			{idxDay, 0x15}, {idxMonth, 0x02}, {idxYear, 0x31},
			{idxHours, 0x13}, {idxMinutes, 0x45}, {idxSeconds, 0x30},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := host
			r := New(func() time.Time { return now })
			set(r, idxB, tt.b)
			for _, w := range tt.writes {
				set(r, w[0], w[1])
			}
			r.mu.Lock()
			offset := r.offset
			r.mu.Unlock()
			assert.Equal(t, want.Sub(host), offset)

			// The offset follows the host clock.
			now = host.Add(time.Hour)
			set(r, idxB, bDefault)
			assert.Equal(t, byte(0x14), get(r, idxHours))
			assert.Equal(t, byte(0x45), get(r, idxMinutes))
			assert.Equal(t, byte(0x15), get(r, idxDay))
			assert.Equal(t, byte(0x02), get(r, idxMonth))
			assert.Equal(t, byte(0x31), get(r, idxYear))
			assert.Equal(t, byte(0x20), get(r, idxCentury))
			assert.Equal(t, byte(0x07), get(r, idxWeekday), "15 Feb 2031 is a Saturday")
		})
	}
}

func TestSetFreezesClock(t *testing.T) {
	now := host
	r := New(func() time.Time { return now })
	set(r, idxB, bDefault|bSet)
	now = now.Add(5 * time.Second)
	assert.Equal(t, byte(0x09), get(r, idxSeconds), "clock does not run under SET")
	set(r, idxB, bDefault)
	assert.Equal(t, byte(0x09), get(r, idxSeconds), "the frozen time is committed")
	now = now.Add(time.Second)
	assert.Equal(t, byte(0x10), get(r, idxSeconds), "and runs again")
}

func TestHostileTimeWrites(t *testing.T) {
	r := newRTC(host)
	for _, idx := range []byte{idxSeconds, idxMinutes, idxHours, idxDay, idxMonth, idxYear, idxCentury} {
		for _, v := range []byte{0x00, 0x99, 0xff} {
			assert.NotPanics(t, func() {
				set(r, idx, v)
				get(r, idx)
			})
		}
	}
}

func TestRAM(t *testing.T) {
	tests := []struct {
		name  string
		index byte // written to the index port
		read  byte // index read back through
	}{
		{"alarm seconds", 0x01, 0x01},
		{"alarm minutes", 0x03, 0x03},
		{"alarm hours", 0x05, 0x05},
		{"first RAM byte", 0x0E, 0x0E},
		{"last RAM byte", 0x7F, 0x7F},
		{"NMI-disable bit masked", 0x80 | 0x10, 0x10},
		{"NMI-disable bit on read", 0x20, 0x80 | 0x20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRTC(host)
			set(r, tt.index, 0x5a)
			assert.Equal(t, byte(0x5a), get(r, tt.read))
			set(r, tt.index, 0xa5)
			assert.Equal(t, byte(0xa5), get(r, tt.read))
		})
	}
}

func TestNMIBitSelectsTimeRegister(t *testing.T) {
	r := newRTC(host)
	assert.Equal(t, byte(0x09), get(r, 0x80|idxSeconds))
}

func TestAnyAccessIsSafe(t *testing.T) {
	for _, width := range []int{1, 2, 4, 8} {
		for off := uint64(0); off < 8; off++ {
			r := newRTC(host)
			b := make([]byte, width)
			require.NotPanics(t, func() { r.Read(off, b) })
			if width != 1 || off != regData {
				for _, v := range b {
					assert.Equal(t, byte(0xff), v, "width %d offset %d", width, off)
				}
			}
			for _, v := range []byte{0x00, 0x0b, 0xff} {
				for i := range b {
					b[i] = v
				}
				require.NotPanics(t, func() { r.Write(off, b) })
			}
		}
	}
}

func TestConcurrent(t *testing.T) {
	r := New(time.Now)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 1000 {
				set(r, byte(i*16+j%16), byte(j))
				get(r, byte(j%0x80))
			}
		})
	}
	wg.Wait()
}
