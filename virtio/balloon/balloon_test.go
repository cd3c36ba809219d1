package balloon

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

const (
	waitFor  = 5 * time.Second
	ramSize  = 16 << 20
	ringBase = 0x100000 // queue q's rings and buffers at ringBase + q*64 KiB
	// allFeatures is what Linux 6.1 accepts of our offer, without
	// EVENT_IDX so that every completion interrupts.
	allFeatures   = virtio.FeatureVersion1 | virtio.FeatureIndirectDesc | FeatureStatsVQ | FeatureDeflateOnOOM | FeatureReporting
	configVector  = numQueues // the mock maps configuration changes after the queues
	firstTestPage = 0x400     // 4 MiB: clear of the rings
)

// newRAM maps guest RAM the way the machine does: private and anonymous,
// so MADV_DONTNEED really drops pages.
func newRAM(t *testing.T, size int) ([]byte, *memory.Memory) {
	t.Helper()
	ram, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, unix.Munmap(ram)) }) // runs after the rig's reset
	mem, err := memory.New(memory.Region{Base: 0, Data: ram})
	require.NoError(t, err)
	return ram, mem
}

// rig is a balloon behind the real PCI transport, driven by the mock.
type rig struct {
	b    *Balloon
	fn   *virtio.PCIDevice
	drv  *virtiotest.PCIDriver
	msi  *virtiotest.MSI
	ram  []byte
	logs *virtiotest.Log
	raw  uint16 // next descriptor index for hand-written chains, counting down
}

func newRig(t *testing.T, features uint64) *rig {
	t.Helper()
	ram, mem := newRAM(t, ramSize)
	r := &rig{ram: ram, msi: virtiotest.NewMSI(), logs: &virtiotest.Log{}, raw: QueueSize - 1}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var err error
	r.b, err = New(Options{MemoryBytes: ramSize, Log: log})
	require.NoError(t, err)
	r.fn, err = virtio.NewPCI(r.b, virtio.PCIOptions{Mem: mem, MSI: r.msi, Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	r.drv, err = virtiotest.NewPCIDriver(r.fn, mem)
	require.NoError(t, err)
	require.NoError(t, r.drv.Start(features, ringBase))
	t.Cleanup(func() {
		r.drv.SetStatus(0)
		require.NoError(t, r.fn.Close())
	})
	return r
}

// send submits a chain on queue q and waits for its completion, which
// must return it with nothing written.
func (r *rig) send(t *testing.T, q int, bufs ...virtiotest.Buf) {
	t.Helper()
	d := r.drv.Queues[q]
	head, _ := d.AddChain(bufs)
	r.await(t, q, head)
}

func (r *rig) await(t *testing.T, q int, head uint16) {
	t.Helper()
	r.drv.Kick(q)
	require.True(t, r.msi.Wait(q, waitFor), "no completion on queue %d", q)
	assert.Equal(t, []virtiotest.Used{{ID: uint32(head), Len: 0}}, r.drv.Queues[q].Used())
}

// pfnBuf is a readable buffer of page frame numbers.
func pfnBuf(pfns ...uint32) virtiotest.Buf { return virtiotest.Buf{Data: le32s(pfns...)} }

// report submits a free page report of explicit ranges on queue q.
func (r *rig) report(t *testing.T, q int, ranges ...Range) {
	t.Helper()
	d := r.drv.Queues[q]
	first := r.raw
	for i, rg := range ranges {
		desc := virtiotest.Desc{Addr: uint64(rg.Addr), Len: uint32(rg.Len), Flags: queue.DescFlagWrite}
		if i+1 < len(ranges) {
			desc.Flags |= queue.DescFlagNext
			desc.Next = r.raw - 1
		}
		d.WriteDesc(d.Desc, r.raw, desc)
		r.raw--
	}
	d.Publish(first)
	r.await(t, q, first)
}

// page returns guest page pfn of the rig's RAM.
func (r *rig) page(pfn uint32) []byte {
	return r.ram[uint64(pfn)<<PageShift : uint64(pfn+1)<<PageShift]
}

// fill writes v over pages [pfn, pfn+n).
func (r *rig) fill(pfn uint32, n int, v byte) {
	for i := range n {
		copy(r.page(pfn+uint32(i)), bytes.Repeat([]byte{v}, PageSize))
	}
}

// resident reports whether the host has page pfn in memory.
func (r *rig) resident(t *testing.T, pfn uint32) bool {
	t.Helper()
	vec := make([]byte, 1)
	require.NoError(t, mincore(r.page(pfn), vec))
	return vec[0]&1 != 0
}

func zero(p []byte) bool { return bytes.Count(p, []byte{0}) == len(p) }

func TestInflateReleasesPages(t *testing.T) {
	r := newRig(t, allFeatures)
	const p = firstTestPage
	r.fill(p, 4, 0xaa)
	for i := range uint32(4) {
		require.True(t, r.resident(t, p+i))
	}

	r.send(t, 0, pfnBuf(p, p+2, p+1)) // p+3 stays

	for i := range uint32(3) {
		assert.False(t, r.resident(t, p+i), "page %d still resident after MADV_DONTNEED", i)
		assert.True(t, zero(r.page(p+i)), "page %d did not refault as zeroes", i)
	}
	assert.True(t, r.resident(t, p+3))
	assert.Equal(t, bytes.Repeat([]byte{0xaa}, PageSize), r.page(p+3), "a page not inflated changed")
	assert.Equal(t, uint64(3), r.b.InflatedPages())
	assert.Zero(t, r.logs.Count("level="), "nothing to complain about")
}

func TestInflateHostilePages(t *testing.T) {
	const p = firstTestPage
	lastPFN := uint32(ramSize/PageSize - 1)
	tests := []struct {
		name     string
		bufs     []virtiotest.Buf
		released []uint32 // pages that must read as zeroes
		kept     []uint32 // pages that must keep their data
		inflated uint64
		logged   int
	}{
		{"past the end of RAM", []virtiotest.Buf{pfnBuf(p, lastPFN+1, lastPFN)}, []uint32{p, lastPFN}, nil, 2, 1},
		{"huge", []virtiotest.Buf{pfnBuf(0xffffffff, 0xfffffffe, 0x80000000)}, nil, nil, 0, 1},
		{"run leaving RAM", []virtiotest.Buf{pfnBuf(seq(lastPFN-1, 4)...)}, []uint32{lastPFN - 1, lastPFN}, nil, 2, 1},
		{"partial entry", []virtiotest.Buf{{Data: append(le32s(p), 1, 0, 0)}}, []uint32{p}, nil, 1, 1},
		{"writable buffer", []virtiotest.Buf{pfnBuf(p), {Len: 4, Write: true}}, []uint32{p}, nil, 1, 1},
		{"over-long buffer capped", []virtiotest.Buf{pfnBuf(seq(p, 300)...)}, []uint32{p, p + 255}, []uint32{p + 256, p + 299},
			MaxPagesPerRequest, 1},
		{"over-long chain capped", []virtiotest.Buf{pfnBuf(seq(p, 200)...), pfnBuf(seq(p+200, 100)...)},
			[]uint32{p + 199, p + 255}, []uint32{p + 256}, MaxPagesPerRequest, 1},
		{"empty", []virtiotest.Buf{{Data: nil}}, nil, nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, allFeatures)
			r.fill(p, 300, 0x55)
			r.fill(lastPFN-1, 2, 0x55)
			r.send(t, 0, tt.bufs...)
			for _, pfn := range tt.released {
				assert.True(t, zero(r.page(pfn)), "page %#x not released", pfn)
			}
			for _, pfn := range tt.kept {
				assert.False(t, zero(r.page(pfn)), "page %#x released", pfn)
			}
			assert.Equal(t, tt.inflated, r.b.InflatedPages())
			assert.Equal(t, tt.logged, r.logs.Count("bad balloon request"), "one message per request")
		})
	}
}

func TestBadRequestLogsAreRateLimited(t *testing.T) {
	r := newRig(t, allFeatures)
	for range logBurst + 5 {
		r.send(t, 0, pfnBuf(0xffffffff))
	}
	assert.Equal(t, logBurst, r.logs.Count("bad balloon request"))
}

func TestDeflate(t *testing.T) {
	r := newRig(t, allFeatures)
	const p = firstTestPage
	r.send(t, 0, pfnBuf(seq(p, 5)...))
	assert.Equal(t, uint64(5), r.b.InflatedPages())
	r.fill(p, 1, 0x77) // the guest may use a page before it deflates it

	r.send(t, 1, pfnBuf(p, p+1))
	assert.Equal(t, uint64(3), r.b.InflatedPages())
	assert.Equal(t, bytes.Repeat([]byte{0x77}, PageSize), r.page(p), "deflate must not touch pages")

	r.send(t, 1, pfnBuf(0xffffffff)) // outside RAM: not counted
	assert.Equal(t, uint64(3), r.b.InflatedPages())
	r.send(t, 1, pfnBuf(seq(p, 10)...))
	assert.Zero(t, r.b.InflatedPages(), "saturates at zero")
}

func TestFreePageReporting(t *testing.T) {
	r := newRig(t, allFeatures)
	const twoMiB = 2 << 20
	r.fill(0x400, 1024, 0xcc) // [4 MiB, 8 MiB)
	r.fill(0xa00, 2, 0xcc)    // the page after a misaligned range's end

	r.report(t, 3,
		Range{Addr: 4 << 20, Len: twoMiB},
		Range{Addr: 0xa00800, Len: PageSize}, // misaligned: nothing whole inside
	)
	assert.False(t, r.resident(t, 0x400), "reported page still resident") // before reading maps the zero page
	assert.True(t, zero(r.ram[4<<20:6<<20]), "reported range still holds data")
	assert.False(t, zero(r.ram[6<<20:8<<20]), "unreported range released")
	assert.False(t, zero(r.page(0xa00)), "partial pages must not be released")
	assert.False(t, zero(r.page(0xa01)), "partial pages must not be released")
	assert.Equal(t, 1, r.logs.Count("bad free page report"))
	assert.Zero(t, r.b.InflatedPages(), "reported pages are not in the balloon")

	r.report(t, 3, Range{Addr: 6 << 20, Len: twoMiB})
	assert.True(t, zero(r.ram[6<<20:8<<20]))
	assert.Equal(t, 1, r.logs.Count("bad free page report"))
}

func TestQueueRoles(t *testing.T) {
	tests := []struct {
		name     string
		features uint64
		want     []Role
	}{
		{"all offered", allFeatures, []Role{RoleInflate, RoleDeflate, RoleStats, RoleReporting}},
		{"no stats", allFeatures &^ FeatureStatsVQ, []Role{RoleInflate, RoleDeflate, RoleReporting}},
		{"no reporting", allFeatures &^ FeatureReporting, []Role{RoleInflate, RoleDeflate, RoleStats}},
		{"neither", virtio.FeatureVersion1, []Role{RoleInflate, RoleDeflate}},
		{"free page hint", FeatureStatsVQ | FeatureFreePageHint | FeatureReporting,
			[]Role{RoleInflate, RoleDeflate, RoleStats, RoleNone, RoleReporting}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, QueueRoles(tt.features))
		})
	}
}

func TestQueueMappingWithoutStats(t *testing.T) {
	r := newRig(t, allFeatures&^FeatureStatsVQ)
	r.fill(0x400, 512, 0xcc)
	r.report(t, 2, Range{Addr: 4 << 20, Len: 2 << 20}) // reporting_vq moved up to 2
	assert.True(t, zero(r.ram[4<<20:6<<20]))
	assert.ErrorIs(t, r.b.RequestStats(), ErrNoStatsQueue)

	// Queue 3 has no role: its chains are left alone.
	d := r.drv.Queues[3]
	d.AddChain([]virtiotest.Buf{pfnBuf(firstTestPage + 0x300)})
	r.drv.Kick(3)
	assert.False(t, r.msi.Wait(3, 100*time.Millisecond))
	assert.Empty(t, d.Used())
	assert.Zero(t, r.b.InflatedPages())
}

func TestQueueMappingWithoutReporting(t *testing.T) {
	r := newRig(t, allFeatures&^FeatureReporting)
	r.offerStats(t, statEntries(TagFreeMemory, 1))
	require.Eventually(t, func() bool { _, _, ok := r.b.Stats(); return ok }, waitFor, time.Millisecond)
	stats, _, _ := r.b.Stats()
	assert.Equal(t, Stats{"free_memory": 1}, stats)
	require.NoError(t, r.b.RequestStats())
	require.True(t, r.msi.Wait(2, waitFor))
}

// offerStats submits a statistics buffer without waiting: the device
// keeps it until RequestStats, so send's completion would never come.
func (r *rig) offerStats(t *testing.T, data []byte) uint16 {
	t.Helper()
	head, _ := r.drv.Queues[2].AddChain([]virtiotest.Buf{{Data: data}})
	r.drv.Kick(2)
	return head
}

func TestStatsRoundTrip(t *testing.T) {
	r := newRig(t, allFeatures)
	_, _, ok := r.b.Stats()
	assert.False(t, ok)
	assert.ErrorIs(t, r.b.RequestStats(), ErrNoStatsBuffer)

	before := time.Now()
	head := r.offerStats(t, statEntries(TagFreeMemory, 100<<20, TagTotalMemory, 512<<20, 42, 1))
	require.Eventually(t, func() bool { _, _, ok := r.b.Stats(); return ok }, waitFor, time.Millisecond)
	stats, at, _ := r.b.Stats()
	assert.Equal(t, Stats{"free_memory": 100 << 20, "total_memory": 512 << 20}, stats)
	assert.False(t, at.Before(before))
	assert.False(t, r.msi.Wait(2, 50*time.Millisecond), "the device keeps the buffer")
	assert.Empty(t, r.drv.Queues[2].Used())

	require.NoError(t, r.b.RequestStats())
	require.True(t, r.msi.Wait(2, waitFor))
	assert.Equal(t, []virtiotest.Used{{ID: uint32(head), Len: 0}}, r.drv.Queues[2].Used())
	assert.ErrorIs(t, r.b.RequestStats(), ErrNoStatsBuffer, "the driver has not refilled yet")

	r.offerStats(t, statEntries(TagFreeMemory, 50<<20, TagSwapIn, 7, TagMajorFaults, 3))
	want := Stats{"free_memory": 50 << 20, "swap_in": 7, "major_faults": 3}
	require.Eventually(t, func() bool { s, _, _ := r.b.Stats(); return assert.ObjectsAreEqual(want, s) }, waitFor, time.Millisecond)
	stats["free_memory"] = 1 // callers get copies
	s, _, _ := r.b.Stats()
	assert.Equal(t, want, s)
	require.NoError(t, r.b.RequestStats())
	require.True(t, r.msi.Wait(2, waitFor))
}

func TestSecondStatsBufferReturnsTheFirst(t *testing.T) {
	r := newRig(t, allFeatures)
	first := r.offerStats(t, statEntries(TagSwapOut, 1))
	require.Eventually(t, func() bool { _, _, ok := r.b.Stats(); return ok }, waitFor, time.Millisecond)
	r.offerStats(t, statEntries(TagSwapOut, 2))
	require.True(t, r.msi.Wait(2, waitFor))
	assert.Equal(t, []virtiotest.Used{{ID: uint32(first), Len: 0}}, r.drv.Queues[2].Used())
	s, _, _ := r.b.Stats()
	assert.Equal(t, Stats{"swap_out": 2}, s)
	assert.Equal(t, 1, r.logs.Count("second statistics buffer"))
}

func TestSetTarget(t *testing.T) {
	tests := []struct {
		name    string
		target  uint64
		pages   uint32
		wantErr bool
	}{
		{"deflated", 0, 0, false},
		{"some", 8 << 20, 2048, false},
		{"rounded down to pages", 8<<20 + 4095, 2048, false},
		{"all of RAM", ramSize, ramSize / PageSize, false},
		{"beyond RAM", ramSize + 1, 0, true},
		{"huge", ^uint64(0), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, allFeatures)
			gen := r.drv.ReadCommon(virtiotest.CommonConfigGeneration, 1)
			err := r.b.SetTarget(tt.target)
			if tt.wantErr {
				assert.ErrorIs(t, err, ErrTargetTooLarge)
				var te *TargetError
				assert.ErrorAs(t, err, &te)
				assert.False(t, r.msi.Wait(configVector, 50*time.Millisecond), "refused targets notify nobody")
				assert.Zero(t, r.drv.ReadDeviceConfig(cfgNumPages, 4))
				return
			}
			require.NoError(t, err)
			assert.True(t, r.msi.Wait(configVector, waitFor), "no configuration change interrupt")
			assert.NotEqual(t, gen, r.drv.ReadCommon(virtiotest.CommonConfigGeneration, 1))
			assert.Equal(t, uint64(tt.pages), r.drv.ReadDeviceConfig(cfgNumPages, 4))
			assert.Equal(t, uint64(tt.pages)*PageSize, r.b.Target())
		})
	}
}

func TestNew(t *testing.T) {
	_, err := New(Options{})
	assert.Error(t, err, "RAM size missing")
	_, err = New(Options{MemoryBytes: 1 << 20, Target: 2 << 20})
	assert.ErrorIs(t, err, ErrTargetTooLarge)
	b, err := New(Options{MemoryBytes: 1 << 20, Target: 1 << 19})
	require.NoError(t, err)
	assert.Equal(t, uint64(1<<19), b.Target())
	assert.NoError(t, b.SetTarget(0), "no interrupt before activation, no panic")
	assert.Equal(t, uint64(FeatureStatsVQ|FeatureDeflateOnOOM|FeatureReporting), b.Features())
	assert.Equal(t, virtio.DeviceBalloon, b.Type())
	assert.Equal(t, []uint16{QueueSize, QueueSize, QueueSize, QueueSize}, b.QueueMaxSizes())
}

func TestConfigReadsAtEveryOffsetAndWidth(t *testing.T) {
	b, err := New(Options{MemoryBytes: 1 << 30, Target: 0x12345 * PageSize})
	require.NoError(t, err)
	b.WriteConfig(cfgActual, le32s(0xa1b2c3))
	want := make([]byte, 64)
	copy(want, le32s(0x12345, 0xa1b2c3))
	for off := uint64(0); off < 48; off++ {
		for _, w := range []int{1, 2, 4, 8} {
			got := bytes.Repeat([]byte{0xee}, w)
			b.ReadConfig(off, got)
			assert.Equal(t, want[off:off+uint64(w)], got, "offset %d width %d", off, w)
		}
	}
	got := []byte{0xee}
	b.ReadConfig(^uint64(0), got)
	assert.Equal(t, []byte{0}, got)
}

func TestConfigReadsThroughTheTransport(t *testing.T) {
	r := newRig(t, allFeatures)
	require.NoError(t, r.b.SetTarget(0x321*PageSize))
	want := make([]byte, 32)
	copy(want, le32s(0x321))
	for off := uint64(0); off < 24; off++ {
		for _, w := range []int{1, 2, 4, 8} {
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], r.drv.ReadDeviceConfig(off, w))
			assert.Equal(t, want[off:off+uint64(w)], b[:w], "offset %d width %d", off, w)
		}
	}
}

func TestConfigWrites(t *testing.T) {
	tests := []struct {
		name   string
		off    uint64
		data   []byte
		actual uint32
	}{
		{"actual", cfgActual, le32s(0x1234), 0x1234},
		{"actual by byte", cfgActual + 2, []byte{0x55}, 0x550000},
		{"straddling num_pages and actual", cfgActual - 2, []byte{1, 2, 3, 4}, 0x0403},
		{"num_pages is the device's", cfgNumPages, le32s(99), 0},
		{"poison_val ignored", cfgPoisonVal, le32s(7), 0},
		{"past the end", configSize, le32s(7), 0},
		{"huge offset", ^uint64(0) - 1, le32s(7), 0},
		{"wide write", 0, make([]byte, 64), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(Options{MemoryBytes: 1 << 30, Target: PageSize})
			require.NoError(t, err)
			b.WriteConfig(tt.off, tt.data)
			assert.Equal(t, uint64(tt.actual)*PageSize, b.Actual())
			assert.Equal(t, uint64(PageSize), b.Target(), "num_pages unchanged")
		})
	}
}

func TestActualThroughTheTransport(t *testing.T) {
	r := newRig(t, allFeatures)
	r.drv.Dev.WriteBAR(r.drv.DeviceCfg.Bar, uint64(r.drv.DeviceCfg.Offset)+cfgActual, le32s(256))
	assert.Equal(t, uint64(1<<20), r.b.Actual())
	assert.Equal(t, uint64(256), r.drv.ReadDeviceConfig(cfgActual, 4))
}

func TestResetClearsDriverState(t *testing.T) {
	r := newRig(t, allFeatures)
	require.NoError(t, r.b.SetTarget(1<<20))
	r.drv.Dev.WriteBAR(r.drv.DeviceCfg.Bar, uint64(r.drv.DeviceCfg.Offset)+cfgActual, le32s(10))
	r.send(t, 0, pfnBuf(firstTestPage))
	r.offerStats(t, statEntries(TagFreeMemory, 5))
	require.Eventually(t, func() bool { _, _, ok := r.b.Stats(); return ok }, waitFor, time.Millisecond)

	r.drv.SetStatus(0)
	assert.Zero(t, r.b.Actual())
	assert.Zero(t, r.b.InflatedPages())
	assert.ErrorIs(t, r.b.RequestStats(), ErrNoStatsQueue)
	assert.Equal(t, uint64(1<<20), r.b.Target(), "the target is the host's")
	assert.NoError(t, r.b.SetTarget(2<<20), "no interrupt while reset")

	require.NoError(t, r.drv.Start(allFeatures, 2*ringBase)) // fresh rings: the mock does not clear avail.idx
	assert.ErrorIs(t, r.b.RequestStats(), ErrNoStatsBuffer, "the old buffer is gone")
	assert.Equal(t, uint64(512), r.drv.ReadDeviceConfig(cfgNumPages, 4))
}

// TestConcurrentUse runs the host API against the vCPU's configuration
// accesses and the queue workers; go test -race checks the locking.
func TestConcurrentUse(t *testing.T) {
	r := newRig(t, allFeatures)
	r.offerStats(t, statEntries(TagFreeMemory, 5))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			assert.NoError(t, r.b.SetTarget(i%64*PageSize))
			_ = r.b.RequestStats()
			r.b.Stats()
			r.b.Actual()
		}
	})
	wg.Go(func() {
		var b [4]byte
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r.b.ReadConfig(uint64(i%8), b[:])
			r.b.WriteConfig(cfgActual, b[:])
		}
	})
	d := r.drv.Queues[0]
	for i := range uint32(50) {
		// Poll the used ring: the configuration interrupts flood the
		// mock's MSI channel, which then drops queue interrupts.
		head, _ := d.AddChain([]virtiotest.Buf{pfnBuf(firstTestPage + i)})
		r.drv.Kick(0)
		require.Eventually(t, func() bool { return d.UsedIdx() == uint16(i+1) }, waitFor, 100*time.Microsecond)
		assert.Equal(t, []virtiotest.Used{{ID: uint32(head), Len: 0}}, d.Used())
	}
	close(stop)
	wg.Wait()
	assert.Equal(t, uint64(50), r.b.InflatedPages())
}
