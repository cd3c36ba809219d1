package pm

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
)

type fakeIRQ struct {
	n   atomic.Int32
	err error
}

func (f *fakeIRQ) Trigger() error {
	f.n.Add(1)
	return f.err
}

var _ devices.Interrupt = (*fakeIRQ)(nil)

type fixture struct {
	pm   *PM
	irq  *fakeIRQ
	offs atomic.Int32 // poweroff calls
}

func newFixture() *fixture {
	f := &fixture{irq: &fakeIRQ{}}
	f.pm = New(f.irq, func() { f.offs.Add(1) }, slog.New(slog.DiscardHandler))
	return f
}

func (f *fixture) write16(off uint64, v uint16) {
	f.pm.Write(off, binary.LittleEndian.AppendUint16(nil, v))
}

func (f *fixture) read16(off uint64) uint16 {
	var b [2]byte
	f.pm.Read(off, b[:])
	return binary.LittleEndian.Uint16(b[:])
}

func sleepCmd(typ uint16, enable bool) uint16 {
	v := typ << cntSleepTypeShift
	if enable {
		v |= cntSleepEnable
	}
	return v
}

func TestLayoutMatchesACPI(t *testing.T) {
	// PM1_STS and PM1_EN each take half of the event block.
	assert.Equal(t, 0, regStatus)
	assert.Equal(t, 2, regEnable)
	assert.Equal(t, 4, regControl)
	assert.Equal(t, 6, Size)
}

func TestSleep(t *testing.T) {
	tests := []struct {
		name     string
		writes   []uint16 // to PM1_CNT, 16 bits
		poweroff int32
	}{
		// Linux writes SLP_TYP first, then SLP_TYP|SLP_EN.
		{"S5 as Linux does it", []uint16{sleepCmd(SleepTypeS5, false), sleepCmd(SleepTypeS5, true)}, 1},
		{"S5 once even if repeated", []uint16{sleepCmd(SleepTypeS5, true), sleepCmd(SleepTypeS5, true)}, 1},
		{"SLP_TYP S5 without SLP_EN", []uint16{sleepCmd(SleepTypeS5, false)}, 0},
		{"S3", []uint16{sleepCmd(3, false), sleepCmd(3, true)}, 0},
		{"S1", []uint16{sleepCmd(1, true)}, 0},
		{"S0 with SLP_EN", []uint16{sleepCmd(0, true)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			for _, w := range tt.writes {
				f.write16(regControl, w)
			}
			assert.Equal(t, tt.poweroff, f.offs.Load())
		})
	}
}

// Linux's PM1_CNT write is 16 bits, but the S5 request must work however
// the two bytes arrive: SLP_TYP latched first, then SLP_EN in the high byte.
func TestSleepByteWrites(t *testing.T) {
	f := newFixture()
	cmd := sleepCmd(SleepTypeS5, false)
	f.pm.Write(regControl+1, []byte{byte(cmd >> 8)})
	assert.Zero(t, f.offs.Load())
	f.pm.Write(regControl+1, []byte{byte(sleepCmd(SleepTypeS5, true) >> 8)})
	assert.Equal(t, int32(1), f.offs.Load())
}

func TestControlReadback(t *testing.T) {
	f := newFixture()
	assert.Equal(t, uint16(cntSCIEnable), f.read16(regControl), "SCI_EN after reset")

	// SCI_EN cannot be cleared; SLP_TYP and BM_RLD stick; SLP_EN and
	// GBL_RLS read as 0.
	f.write16(regControl, 0xffff&^cntSleepEnable)
	assert.Equal(t, uint16(cntSCIEnable|cntBusMasterRld|cntSleepTypeMask), f.read16(regControl))
	f.write16(regControl, sleepCmd(3, true))
	assert.Equal(t, uint16(cntSCIEnable|3<<cntSleepTypeShift), f.read16(regControl))
	f.write16(regControl, 0)
	assert.Equal(t, uint16(cntSCIEnable), f.read16(regControl))
	assert.Zero(t, f.offs.Load())
}

func TestStatusWriteOneToClear(t *testing.T) {
	f := newFixture()
	require.NoError(t, f.pm.PressPowerButton())
	assert.Equal(t, uint16(stsPowerButton), f.read16(regStatus))

	f.write16(regStatus, 0) // writing 0 leaves it
	assert.Equal(t, uint16(stsPowerButton), f.read16(regStatus))
	f.write16(regStatus, ^uint16(stsPowerButton)) // other bits do not clear it
	assert.Equal(t, uint16(stsPowerButton), f.read16(regStatus))
	f.pm.Write(regStatus, []byte{0xff}) // the low byte does not cover bit 8
	assert.Equal(t, uint16(stsPowerButton), f.read16(regStatus))
	f.write16(regStatus, stsPowerButton)
	assert.Zero(t, f.read16(regStatus))
}

func TestEnableReadWrite(t *testing.T) {
	f := newFixture()
	f.write16(regEnable, 0xffff)
	assert.Equal(t, uint16(enableBits), f.read16(regEnable))
	f.pm.Write(regEnable+1, []byte{0}) // high byte only
	assert.Equal(t, uint16(enTimer|enGlobal), f.read16(regEnable))
	f.write16(regEnable, 0)
	assert.Zero(t, f.read16(regEnable))
}

func TestPowerButton(t *testing.T) {
	t.Run("disabled: latched, no SCI", func(t *testing.T) {
		f := newFixture()
		require.NoError(t, f.pm.PressPowerButton())
		assert.Zero(t, f.irq.n.Load())
		assert.False(t, f.pm.SCIAsserted())
	})
	t.Run("enabled: SCI until the guest clears the status", func(t *testing.T) {
		f := newFixture()
		f.write16(regEnable, enPowerButton)
		require.NoError(t, f.pm.PressPowerButton())
		assert.Equal(t, int32(1), f.irq.n.Load())
		assert.True(t, f.pm.SCIAsserted())

		// A second press while asserted merges into the first.
		require.NoError(t, f.pm.PressPowerButton())
		assert.Equal(t, int32(1), f.irq.n.Load())

		// acpi_ev_fixed_event_detect: read status, clear by writing 1.
		f.write16(regStatus, f.read16(regStatus)&f.read16(regEnable))
		assert.False(t, f.pm.SCIAsserted())

		require.NoError(t, f.pm.PressPowerButton())
		assert.Equal(t, int32(2), f.irq.n.Load())
	})
	t.Run("enabling a latched event raises the SCI", func(t *testing.T) {
		f := newFixture()
		require.NoError(t, f.pm.PressPowerButton())
		f.write16(regEnable, enPowerButton)
		assert.Equal(t, int32(1), f.irq.n.Load())
		f.write16(regEnable, enPowerButton) // still asserted: no new edge
		assert.Equal(t, int32(1), f.irq.n.Load())
	})
	t.Run("trigger error is returned", func(t *testing.T) {
		f := newFixture()
		errBoom := errors.New("boom")
		f.irq.err = errBoom
		f.write16(regEnable, enPowerButton)
		assert.ErrorIs(t, f.pm.PressPowerButton(), errBoom)
	})
}

// Every offset and width, inside and past the block, reads and writes
// without panicking; bytes past the block read 0xff.
func TestAnyAccess(t *testing.T) {
	for _, width := range []int{1, 2, 4, 8} {
		for off := uint64(0); off < Size+8; off++ {
			f := newFixture()
			data := make([]byte, width)
			f.pm.Read(off, data)
			for i, b := range data {
				if off+uint64(i) >= Size {
					assert.Equal(t, byte(0xff), b, "width %d offset %d byte %d", width, off, i)
				}
			}
			for i := range data {
				data[i] = 0xff
			}
			f.pm.Write(off, data)
		}
	}
	f := newFixture()
	data := make([]byte, 8)
	f.pm.Read(^uint64(0), data)
	f.pm.Write(^uint64(0)-1, data)
	assert.Equal(t, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, data)
	f.pm.Read(0, nil)
}

func TestWideRead(t *testing.T) {
	f := newFixture()
	f.write16(regEnable, enPowerButton)
	require.NoError(t, f.pm.PressPowerButton())
	data := make([]byte, 8)
	f.pm.Read(0, data)
	assert.Equal(t, []byte{0x00, 0x01, 0x00, 0x01, 0x01, 0x00, 0xff, 0xff}, data)
}

func TestConcurrentAccess(t *testing.T) {
	f := newFixture()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				f.write16(regEnable, enPowerButton)
				_ = f.pm.PressPowerButton()
				f.write16(regStatus, stsPowerButton)
				_ = f.read16(regControl)
			}
		}()
	}
	wg.Wait()
	assert.Zero(t, f.offs.Load())
}

func FuzzWrites(f *testing.F) {
	f.Add(uint8(4), []byte{0x00, 0x34})
	f.Add(uint8(0), []byte{0xff, 0xff, 0xff, 0xff, 0x00, 0x34, 0, 0})
	f.Fuzz(func(t *testing.T, off uint8, data []byte) {
		if len(data) > 8 {
			data = data[:8]
		}
		fx := newFixture()
		fx.pm.Write(uint64(off), data)
		fx.pm.Read(uint64(off), data)
		if fx.read16(regControl)&cntSCIEnable == 0 {
			t.Fatal("SCI_EN cleared")
		}
		if fx.offs.Load() > 1 {
			t.Fatal("poweroff called more than once")
		}
	})
}
