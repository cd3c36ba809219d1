package balloon

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// seg is one buffer of a hand-built chain.
type seg struct {
	data  []byte // readable contents
	n     uint32 // writable length
	write bool
	addr  memory.GuestAddress // explicit address, e.g. outside memory
}

// twoRegions is guest RAM of [0, 1 MiB) and [2 MiB, 3 MiB), with a hole
// between them, in ordinary Go memory (nothing here madvises).
func twoRegions(t testing.TB) *memory.Memory {
	t.Helper()
	mem, err := memory.New(
		memory.Region{Base: 0, Data: make([]byte, 1<<20)},
		memory.Region{Base: 2 << 20, Data: make([]byte, 1<<20)},
	)
	require.NoError(t, err)
	return mem
}

// chain lays readable buffers out from 0x1000 on and returns the chain.
func chain(t testing.TB, mem *memory.Memory, segs ...seg) queue.Chain {
	t.Helper()
	next := memory.GuestAddress(0x1000)
	var c queue.Chain
	for _, s := range segs {
		n := s.n
		if !s.write {
			n = uint32(len(s.data))
		}
		addr := s.addr
		if addr == 0 {
			addr = next
			next += memory.GuestAddress(n+15) &^ 15
			if !s.write {
				require.NoError(t, mem.WriteAt(s.data, addr))
			}
		}
		b := queue.Buffer{Addr: addr, Len: n}
		if s.write {
			c.Writable = append(c.Writable, b)
		} else {
			c.Readable = append(c.Readable, b)
		}
	}
	return c
}

func le32s(vs ...uint32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

func seq(first uint32, n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = first + uint32(i)
	}
	return out
}

func TestParsePageList(t *testing.T) {
	tests := []struct {
		name    string
		segs    []seg
		want    []uint32
		wantErr error
	}{
		{"one buffer", []seg{{data: le32s(1, 2, 0xffffffff)}}, []uint32{1, 2, 0xffffffff}, nil},
		{"two buffers", []seg{{data: le32s(7)}, {data: le32s(9, 8)}}, []uint32{7, 9, 8}, nil},
		{"empty", []seg{{data: nil}}, []uint32{}, nil},
		{"partial entry dropped", []seg{{data: append(le32s(5), 1, 2)}}, []uint32{5}, ErrPartialEntry},
		{"writable buffer ignored", []seg{{data: le32s(3)}, {n: 8, write: true}}, []uint32{3}, ErrWrongDirection},
		{"capped at 256", []seg{{data: le32s(seq(0, 300)...)}}, seq(0, MaxPagesPerRequest), ErrTooManyPages},
		{"capped across buffers", []seg{{data: le32s(seq(0, 200)...)}, {data: le32s(seq(200, 100)...)}},
			seq(0, MaxPagesPerRequest), ErrTooManyPages},
		{"buffer outside memory", []seg{{data: le32s(1)}, {data: make([]byte, 8), addr: 0x180000}}, []uint32{1},
			memory.ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := twoRegions(t)
			c := chain(t, mem, tt.segs...)
			got, err := ParsePageList(c, mem, make([]uint32, 0, MaxPagesPerRequest))
			assert.Equal(t, tt.want, got)
			if tt.wantErr == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, tt.wantErr)
			var re *RequestError
			assert.ErrorAs(t, err, &re)
		})
	}
}

func TestPageRanges(t *testing.T) {
	const hole = 0x100 // first page frame of the hole between the regions
	tests := []struct {
		name        string
		pfns        []uint32
		want        []Range
		wantOutside int
	}{
		{"ascending run", []uint32{4, 5, 6}, []Range{{0x4000, 3 * PageSize}}, 0},
		{"descending run", []uint32{6, 5, 4}, []Range{{0x4000, 3 * PageSize}}, 0},
		{"scattered", []uint32{9, 2, 3, 7}, []Range{{0x9000, PageSize}, {0x2000, 2 * PageSize}, {0x7000, PageSize}}, 0},
		{"page zero", []uint32{0, 1}, []Range{{0, 2 * PageSize}}, 0},
		{"last page of RAM", []uint32{0x2ff}, []Range{{0x2ff000, PageSize}}, 0},
		{"in the hole", []uint32{hole, hole + 1}, []Range{}, 2},
		{"run into the hole", []uint32{hole - 2, hole - 1, hole, hole + 1}, []Range{{0xfe000, 2 * PageSize}}, 2},
		{"run across the hole", seq(hole-1, 0x102), []Range{{0xff000, PageSize}, {0x200000, PageSize}}, 0x100},
		{"past the end", []uint32{0x300, 0x12345678}, []Range{}, 2},
		{"huge", []uint32{0xffffffff, 0xfffffffe}, []Range{}, 2},
		{"duplicates", []uint32{3, 3}, []Range{{0x3000, PageSize}, {0x3000, PageSize}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PageRanges(twoRegions(t), tt.pfns, make([]Range, 0, 4))
			assert.Equal(t, tt.want, got)
			if tt.wantOutside == 0 {
				assert.NoError(t, err)
				return
			}
			var oe *OutsideError
			require.ErrorAs(t, err, &oe)
			assert.Equal(t, tt.wantOutside, oe.Count)
			assert.ErrorIs(t, err, memory.ErrOutOfRange)
		})
	}
}

func TestParseReport(t *testing.T) {
	tests := []struct {
		name    string
		segs    []seg
		want    []Range
		wantErr error
	}{
		{"two ranges", []seg{{n: 0x20000, write: true, addr: 0x40000}, {n: 0x1000, write: true, addr: 0x200000}},
			[]Range{{0x40000, 0x20000}, {0x200000, 0x1000}}, nil},
		{"trimmed inward", []seg{{n: 0x3000, write: true, addr: 0x40800}}, []Range{{0x41000, 0x2000}}, ErrMisaligned},
		{"under a page", []seg{{n: 0x800, write: true, addr: 0x40100}}, []Range{}, ErrMisaligned},
		{"empty buffer skipped", []seg{{n: 0, write: true, addr: 0x40000}}, []Range{}, nil},
		{"outside memory", []seg{{n: 0x1000, write: true, addr: 0x100000}, {n: 0x1000, write: true, addr: 0x2000}},
			[]Range{{0x2000, 0x1000}}, memory.ErrOutOfRange},
		{"across the hole", []seg{{n: 0x200000, write: true, addr: 0x80000}}, []Range{}, memory.ErrOutOfRange},
		{"readable ignored", []seg{{data: []byte{1}}, {n: 0x1000, write: true, addr: 0x3000}},
			[]Range{{0x3000, 0x1000}}, ErrWrongDirection},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := twoRegions(t)
			got, err := ParseReport(chain(t, mem, tt.segs...), mem, nil)
			if len(tt.want) == 0 {
				assert.Empty(t, got)
			} else {
				assert.Equal(t, tt.want, got)
			}
			if tt.wantErr == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, tt.wantErr)
		})
	}
}

func TestParseReportCapsRanges(t *testing.T) {
	mem := twoRegions(t)
	var segs []seg
	for i := range MaxReportRanges + 10 {
		segs = append(segs, seg{n: PageSize, write: true, addr: memory.GuestAddress(i * PageSize)})
	}
	got, err := ParseReport(chain(t, mem, segs...), mem, nil)
	assert.ErrorIs(t, err, ErrTooManyRanges)
	assert.Len(t, got, MaxReportRanges)
}

// statEntries encodes (tag, value) pairs as struct virtio_balloon_stat.
func statEntries(kv ...uint64) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = binary.LittleEndian.AppendUint16(b, uint16(kv[i]))
		b = binary.LittleEndian.AppendUint64(b, kv[i+1])
	}
	return b
}

func TestParseStats(t *testing.T) {
	all := statEntries(0, 10, 1, 11, 2, 12, 3, 13, 4, 14, 5, 15, 6, 16, 7, 17, 8, 18, 9, 19)
	tests := []struct {
		name    string
		segs    []seg
		want    Stats
		wantErr error
	}{
		{"every tag", []seg{{data: all}}, Stats{"swap_in": 10, "swap_out": 11, "major_faults": 12,
			"minor_faults": 13, "free_memory": 14, "total_memory": 15, "available_memory": 16, "disk_caches": 17,
			"hugetlb_allocations": 18, "hugetlb_failures": 19}, nil},
		{"unknown tags skipped", []seg{{data: statEntries(4, 1<<30, 10, 5, 0xffff, 6)}}, Stats{"free_memory": 1 << 30}, nil},
		{"repeated tag keeps the last", []seg{{data: statEntries(5, 1, 5, 2)}}, Stats{"total_memory": 2}, nil},
		{"entry split across buffers", []seg{{data: all[:15]}, {data: all[15:20]}},
			Stats{"swap_in": 10, "swap_out": 11}, nil},
		{"partial entry", []seg{{data: statEntries(4, 7)[:9]}}, Stats{}, ErrPartialEntry},
		{"empty", []seg{{data: nil}}, Stats{}, nil},
		{"writable ignored", []seg{{data: statEntries(6, 3)}, {n: 10, write: true}}, Stats{"available_memory": 3},
			ErrWrongDirection},
		{"capped", []seg{{data: make([]byte, (MaxStatsEntries+5)*statEntrySize)}}, Stats{"swap_in": 0}, ErrTooManyStats},
		{"outside memory", []seg{{data: make([]byte, 10), addr: 0x1ffff8}}, Stats{}, memory.ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := twoRegions(t)
			got, err := ParseStats(chain(t, mem, tt.segs...), mem)
			assert.Equal(t, tt.want, got)
			if tt.wantErr == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, tt.wantErr)
		})
	}
}

func TestStatName(t *testing.T) {
	assert.Equal(t, "swap_in", StatName(TagSwapIn))
	assert.Equal(t, "hugetlb_failures", StatName(TagHugetlbFailures))
	assert.Equal(t, "", StatName(10))
	assert.Equal(t, "", StatName(0xffff))
}
