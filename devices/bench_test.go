package devices_test

import (
	"context"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/gvmm-dev/gvmm/devices"
)

// reg is a device with one byte of state: the least a real device does
// per access, so the benchmark times the bus.
type reg struct{ v byte }

func (r *reg) Read(_ uint64, data []byte) {
	for i := range data {
		data[i] = r.v
	}
}

func (r *reg) Write(_ uint64, data []byte) { r.v = data[0] }

// countHandler counts the records the bus logs, at every level.
type countHandler struct{ n atomic.Int64 }

func (h *countHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (h *countHandler) Handle(context.Context, slog.Record) error { h.n.Add(1); return nil }
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h *countHandler) WithGroup(string) slog.Handler             { return h }

// pcPorts is the port map of a PC like gvmm's (machine/devices.go) plus
// the legacy chips a fuller VMM adds, so the lookup searches a table of
// realistic size.
var pcPorts = []struct{ base, size uint64 }{
	{0x20, 2},  // master PIC
	{0x40, 4},  // PIT
	{0x60, 5},  // i8042 (0x60, 0x64)
	{0x70, 2},  // CMOS/RTC
	{0x80, 1},  // POST/delay port
	{0x92, 1},  // system control port A
	{0xa0, 2},  // slave PIC
	{0x3f8, 8}, // COM1
	{0x440, 1}, // boot timer
	{0x4d0, 2}, // ELCR
	{0x600, 6}, // ACPI PM1a event and control blocks
	{0xcf8, 8}, // PCI CONFIG_ADDRESS, CONFIG_DATA
}

func newPCBus(b *testing.B, cpus int) (*devices.Bus, *countHandler) {
	h := &countHandler{}
	bus := devices.NewBus("pio", cpus, slog.New(h))
	for _, p := range pcPorts {
		if err := bus.Insert("reg", p.base, p.size, &reg{}); err != nil {
			b.Fatal(err)
		}
	}
	return bus, h
}

// BenchmarkBusDispatch times one port I/O exit's trip through the bus:
// the lookup and the call into the device. A vCPU makes one per
// IN or OUT, e.g. two per console byte. An unclaimed port (the guest's
// probes) must cost no more and log only its first access.
func BenchmarkBusDispatch(b *testing.B) {
	tests := []struct {
		name  string
		port  uint64
		size  int
		write bool
		logs  int64 // records the whole run may log
	}{
		{"read/com1-lsr", 0x3fd, 1, false, 0},
		{"write/com1-thr", 0x3f8, 1, true, 0},
		{"read/pci-data-4", 0xcfc, 4, false, 0},
		{"read/miss", 0x3f0, 1, false, 1},
		{"write/miss", 0x3f0, 1, true, 1},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			bus, logged := newPCBus(b, 1)
			data := make([]byte, tt.size)
			b.ReportAllocs()
			if tt.write {
				for b.Loop() {
					bus.Write(0, tt.port, data)
				}
			} else {
				for b.Loop() {
					bus.Read(0, tt.port, data)
				}
			}
			if n := logged.n.Load(); n != tt.logs {
				b.Fatalf("logged %d records, want %d", n, tt.logs)
			}
		})
	}
}

// BenchmarkBusDispatchParallel is the read of COM1's LSR from every
// GOMAXPROCS goroutine at once, each a vCPU of its own, as vCPUs share
// one bus: lookups and counts must not contend (with a shared read lock
// they cost 96 ns each on two CPUs).
func BenchmarkBusDispatchParallel(b *testing.B) {
	procs := runtime.GOMAXPROCS(0)
	bus, _ := newPCBus(b, procs)
	var next atomic.Int32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		cpu := int(next.Add(1)-1) % procs
		data := make([]byte, 1)
		for pb.Next() {
			bus.Read(cpu, 0x3fd, data)
		}
	})
}
