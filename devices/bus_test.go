package devices_test

import (
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
)

// offsets records the offsets a device is accessed at.
type offsets struct {
	mu   sync.Mutex
	seen []uint64
}

func (o *offsets) Read(off uint64, data []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, off)
	clear(data)
}

func (o *offsets) Write(off uint64, _ []byte) { o.Read(off, make([]byte, 1)) }

func TestBusInsertRejectsBadRanges(t *testing.T) {
	bus := devices.NewBus("pio", 1, slog.New(slog.DiscardHandler))
	require.NoError(t, bus.Insert("reg", 0x10, 0x10, &reg{}))
	for _, tt := range []struct {
		name       string
		base, size uint64
		ok         bool
	}{
		{"zero size", 0x40, 0, false},
		{"overflow", ^uint64(0) - 1, 4, false},
		{"overlaps the start", 0x8, 0x9, false},
		{"overlaps the end", 0x1f, 2, false},
		{"inside", 0x14, 1, false},
		{"covers", 0x0, 0x40, false},
		{"adjacent below", 0x8, 0x8, true},
		{"adjacent above", 0x20, 0x8, true},
		{"ending at 2^64", ^uint64(0) - 3, 4, false}, // its end is not representable
		{"near the top", ^uint64(0) - 7, 4, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := bus.Insert("reg", tt.base, tt.size, &reg{})
			if tt.ok {
				assert.NoError(t, err)
			} else {
				assert.Error(t, err)
			}
		})
	}
}

func TestBusDispatchesByOffsetAndMissesReadAllOnes(t *testing.T) {
	h := &countHandler{}
	bus := devices.NewBus("pio", 1, slog.New(h))
	dev := &offsets{}
	require.NoError(t, bus.Insert("reg", 0x3f8, 8, dev))

	data := []byte{0x55}
	bus.Read(0, 0x3fd, data)
	assert.Equal(t, []byte{0}, data)
	bus.Write(0, 0x3f8, []byte{'x'})
	assert.Equal(t, []uint64{5, 0}, dev.seen)

	// Straddling the range's end, or outside it: nobody decodes it.
	for _, a := range []struct {
		addr uint64
		n    int
	}{{0x3fe, 4}, {0x3f0, 1}, {0x400, 2}} {
		data := []byte{0, 0, 0, 0}[:a.n]
		bus.Read(0, a.addr, data)
		assert.Equal(t, []byte{0xff, 0xff, 0xff, 0xff}[:a.n], data, "%#x", a.addr)
	}
	bus.Read(0, 0x3f0, []byte{0})
	bus.Write(0, 0x3f0, []byte{0})
	assert.Equal(t, int64(3), h.n.Load(), "each missed address is logged once")
	assert.Len(t, dev.seen, 2)

	require.NoError(t, bus.Remove(0x3f8))
	assert.Error(t, bus.Remove(0x3f8))
	bus.Read(0, 0x3fd, data)
	assert.Equal(t, []byte{0xff}, data, "removed")
}

// Lookups run on vCPU threads while BARs move: they see either the old
// ranges or the new, never a half-updated table (go test -race).
func TestBusLookupsDuringInsertAndRemove(t *testing.T) {
	bus := devices.NewBus("mmio", 1, slog.New(slog.DiscardHandler))
	require.NoError(t, bus.Insert("reg", 0x1000, 0x100, &reg{v: 1}))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			data := []byte{0}
			for {
				select {
				case <-stop:
					return
				default:
				}
				bus.Read(0, 0x1010, data)
				if data[0] != 1 {
					t.Errorf("a fixed range read %#x", data[0])
					return
				}
			}
		})
	}
	for i := range 1000 {
		base := 0x2000 + uint64(i%8)*0x100
		require.NoError(t, bus.Insert("reg", base, 0x100, &reg{}))
		require.NoError(t, bus.Remove(base))
	}
	close(stop)
	wg.Wait()
}

func TestBusCountsExitsByDevice(t *testing.T) {
	bus := devices.NewBus("pio", 1, slog.New(slog.DiscardHandler))
	require.NoError(t, bus.Insert("uart", 0x3f8, 8, &offsets{}))
	require.NoError(t, bus.Insert("pci", 0xcf8, 4, &offsets{}))
	require.NoError(t, bus.Insert("pci", 0xcfc, 4, &offsets{})) // one name, two ranges
	b := make([]byte, 1)
	for _, a := range []struct {
		addr  uint64
		write bool
		n     int
	}{
		{0x3f8, true, 1}, {0x3fd, false, 1}, {0x3ff, false, 1},
		{0xcf8, true, 4}, {0xcfc, false, 4},
		{0x3ff, false, 2}, // straddles the end: unclaimed
		{0x80, true, 1},   // nothing there
	} {
		data := make([]byte, a.n)
		if a.write {
			bus.Write(0, a.addr, data)
		} else {
			bus.Read(0, a.addr, data)
		}
	}
	bus.Read(0, 0x3f8, b)
	got := map[string]uint64{}
	var order []string
	bus.Exits(func(name string, n uint64) {
		got[name] = n
		order = append(order, name)
	})
	assert.Equal(t, map[string]uint64{"uart": 4, "pci": 2, devices.Unclaimed: 2}, got)
	assert.Equal(t, []string{"pci", "uart", devices.Unclaimed}, order, "sorted by name")
}

func TestBusSumsExitsOfEveryVCPU(t *testing.T) {
	bus := devices.NewBus("mmio", 3, slog.New(slog.DiscardHandler))
	require.NoError(t, bus.Insert("dev", 0x1000, 0x10, &offsets{}))
	data := make([]byte, 4)
	for cpu, n := range []int{1, 2, 3} {
		for range n {
			bus.Read(cpu, 0x1000, data)
			bus.Write(cpu, 0x2000, data)
		}
	}
	bus.Read(7, 0x1004, data)  // no such vCPU: counted as vCPU 0
	bus.Read(-1, 0x1004, data) // likewise
	got := map[string]uint64{}
	bus.Exits(func(name string, n uint64) { got[name] = n })
	assert.Equal(t, map[string]uint64{"dev": 8, devices.Unclaimed: 6}, got)
}
