package balloon

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

const (
	fuzzRegion    = 32 << 10 // guest RAM: [0, 32K) and [64K, 96K)
	fuzzRecord    = 9        // write flag, address, length
	fuzzMaxRecord = 16
)

// decodeFuzzChain reads a chain and a guest memory image from a fuzz
// input: a record count, that many (flags, addr, len) records, then the
// contents of the two memory regions.
func decodeFuzzChain(data []byte) (queue.Chain, *memory.Memory, bool) {
	var c queue.Chain
	if len(data) < 1 {
		return c, nil, false
	}
	n := int(data[0]) % fuzzMaxRecord
	data = data[1:]
	if len(data) < n*fuzzRecord {
		return c, nil, false
	}
	for i := 0; i < n; i++ {
		r := data[i*fuzzRecord:]
		b := queue.Buffer{Addr: memory.GuestAddress(binary.LittleEndian.Uint32(r[1:])), Len: binary.LittleEndian.Uint32(r[5:])}
		if r[0]&1 != 0 {
			c.Writable = append(c.Writable, b)
		} else {
			c.Readable = append(c.Readable, b)
		}
	}
	image := make([]byte, 2*fuzzRegion)
	copy(image, data[n*fuzzRecord:])
	mem, err := memory.New(
		memory.Region{Base: 0, Data: image[:fuzzRegion]},
		memory.Region{Base: 2 * fuzzRegion, Data: image[fuzzRegion:]},
	)
	if err != nil {
		panic(err)
	}
	return c, mem, true
}

func checkRanges(t *testing.T, mem *memory.Memory, rs []Range) uint64 {
	var pages uint64
	for _, r := range rs {
		if r.Len == 0 || r.Len%PageSize != 0 || uint64(r.Addr)%PageSize != 0 {
			t.Fatalf("range %+v not whole pages", r)
		}
		if _, err := mem.Slice(r.Addr, r.Len); err != nil {
			t.Fatalf("range %+v outside guest RAM: %v", r, err)
		}
		pages += r.Len / PageSize
	}
	return pages
}

// FuzzParseRequests feeds one chain to every parser of guest requests and
// checks that none panics and that whatever they accept is safe to act
// on: page lists capped, every released range whole pages inside guest
// RAM, every page accounted for, errors typed.
func FuzzParseRequests(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c, mem, ok := decodeFuzzChain(data)
		if !ok {
			return
		}
		var re *RequestError

		pfns, err := ParsePageList(c, mem, make([]uint32, 0, MaxPagesPerRequest))
		if len(pfns) > MaxPagesPerRequest {
			t.Fatalf("%d page frame numbers accepted", len(pfns))
		}
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("untyped page list error %v", err)
		}
		ranges, err := PageRanges(mem, pfns, make([]Range, 0, MaxPagesPerRequest))
		if len(ranges) > len(pfns) {
			t.Fatalf("%d ranges from %d pages", len(ranges), len(pfns))
		}
		outside := 0
		var oe *OutsideError
		if errors.As(err, &oe) {
			outside = oe.Count
		} else if err != nil {
			t.Fatalf("untyped page range error %v", err)
		}
		if got := checkRanges(t, mem, ranges) + uint64(outside); got != uint64(len(pfns)) {
			t.Fatalf("%d pages accounted for of %d", got, len(pfns))
		}

		ranges, err = ParseReport(c, mem, nil)
		if len(ranges) > MaxReportRanges {
			t.Fatalf("%d report ranges accepted", len(ranges))
		}
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("untyped report error %v", err)
		}
		checkRanges(t, mem, ranges)

		stats, err := ParseStats(c, mem)
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("untyped stats error %v", err)
		}
		for name := range stats {
			if name == "" {
				t.Fatal("unnamed statistic")
			}
		}
		if len(stats) > len(statNames) {
			t.Fatalf("%d statistics", len(stats))
		}
	})
}
