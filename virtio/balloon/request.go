package balloon

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// Page geometry of the balloon protocol: page frame numbers always name
// 4 KiB pages, whatever the guest's page size (VIRTIO_BALLOON_PFN_SHIFT).
const (
	PageShift = 12
	PageSize  = 1 << PageShift
)

// Request limits. Linux sends at most VIRTIO_BALLOON_ARRAY_PFNS_MAX (256)
// page frame numbers per inflate or deflate request and at most
// PAGE_REPORTING_CAPACITY (32) ranges per free page report.
const (
	MaxPagesPerRequest = 256
	MaxReportRanges    = QueueSize
	pfnSize            = 4 // le32
)

// Errors wrapped in a *RequestError. None is fatal: the device uses what
// it can of the request and completes it.
var (
	ErrWrongDirection = errors.New("buffer in the wrong direction for the queue")
	ErrPartialEntry   = errors.New("buffer length is not a whole number of entries")
	ErrTooManyPages   = errors.New("more page frame numbers than a request may carry")
	ErrTooManyRanges  = errors.New("more free page ranges than a report may carry")
	ErrTooManyStats   = errors.New("more statistics than a buffer may carry")
	ErrMisaligned     = errors.New("free page range not aligned to 4 KiB")
)

// RequestError is a malformed part of a request: Buffer is the index of
// the buffer within its direction's list.
type RequestError struct {
	Buffer int
	Addr   memory.GuestAddress
	Len    uint64
	Err    error
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("virtio-balloon buffer %d at [%#x, +%#x): %v", e.Buffer, uint64(e.Addr), e.Len, e.Err)
}

func (e *RequestError) Unwrap() error { return e.Err }

// OutsideError reports page frame numbers that name no guest RAM; First
// is one of them. The request's other pages are still used.
type OutsideError struct {
	Count int
	First uint32
}

func (e *OutsideError) Error() string {
	return fmt.Sprintf("virtio-balloon: %d page frame numbers outside guest RAM, e.g. %#x", e.Count, e.First)
}

func (e *OutsideError) Unwrap() error { return memory.ErrOutOfRange }

// Range is a page-aligned range of guest RAM.
type Range struct {
	Addr memory.GuestAddress
	Len  uint64
}

// ParsePageList reads the le32 page frame numbers of an inflate or deflate
// request into dst[:0], at most MaxPagesPerRequest of them, reading no
// more guest memory than that. Problems are reported as a *RequestError
// (the first one found) while the usable numbers are still returned;
// nothing here checks that the pages exist, PageRanges does.
func ParsePageList(c queue.Chain, mem *memory.Memory, dst []uint32) ([]uint32, error) {
	pfns := dst[:0]
	var first error
	note := func(i int, b queue.Buffer, err error) {
		if first == nil {
			first = &RequestError{Buffer: i, Addr: b.Addr, Len: uint64(b.Len), Err: err}
		}
	}
	if len(c.Writable) > 0 {
		note(0, c.Writable[0], ErrWrongDirection)
	}
	for i, b := range c.Readable {
		if b.Len%pfnSize != 0 {
			note(i, b, ErrPartialEntry)
		}
		n := int(b.Len / pfnSize)
		room := MaxPagesPerRequest - len(pfns)
		if n > room {
			note(i, b, ErrTooManyPages)
			n = room
		}
		if n == 0 {
			continue
		}
		s, err := mem.Slice(b.Addr, uint64(n)*pfnSize)
		if err != nil {
			note(i, b, err)
			continue
		}
		for j := 0; j < n; j++ {
			pfns = append(pfns, binary.LittleEndian.Uint32(s[pfnSize*j:]))
		}
	}
	return pfns, first
}

// PageRanges checks each page frame number against guest RAM and returns
// the pages that exist in dst[:0], adjacent pages (in either order)
// merged into one range as long as they lie in one region. Pages outside
// guest RAM are left out and reported by an *OutsideError. The result has
// at most len(pfns) ranges.
func PageRanges(mem *memory.Memory, pfns []uint32, dst []Range) ([]Range, error) {
	out := dst[:0]
	var outside OutsideError
	add := func(pfn, n uint64) {
		addr := memory.GuestAddress(pfn << PageShift)
		if _, err := mem.Slice(addr, n<<PageShift); err == nil {
			out = append(out, Range{Addr: addr, Len: n << PageShift})
			return
		}
		for p := pfn; p < pfn+n; p++ { // the run leaves RAM or crosses regions
			addr := memory.GuestAddress(p << PageShift)
			if _, err := mem.Slice(addr, PageSize); err != nil {
				if outside.Count == 0 {
					outside.First = uint32(p)
				}
				outside.Count++
				continue
			}
			if l := len(out) - 1; l >= 0 && out[l].Addr+memory.GuestAddress(out[l].Len) == addr {
				if _, err := mem.Slice(out[l].Addr, out[l].Len+PageSize); err == nil {
					out[l].Len += PageSize
					continue
				}
			}
			out = append(out, Range{Addr: addr, Len: PageSize})
		}
	}
	var lo, n uint64 // the current run of adjacent pages, [lo, lo+n)
	for _, p := range pfns {
		pfn := uint64(p)
		switch {
		case n > 0 && pfn == lo+n:
			n++
		case n > 0 && lo > 0 && pfn == lo-1:
			lo, n = pfn, n+1
		default:
			if n > 0 {
				add(lo, n)
			}
			lo, n = pfn, 1
		}
	}
	if n > 0 {
		add(lo, n)
	}
	if outside.Count > 0 {
		return out, &outside
	}
	return out, nil
}

// ParseReport returns the free page ranges of a page report in dst[:0]:
// the device-writable buffers, each checked against guest RAM and trimmed
// inward to 4 KiB boundaries, at most MaxReportRanges of them. Empty,
// misplaced and surplus buffers are left out; the first problem is
// reported as a *RequestError.
func ParseReport(c queue.Chain, mem *memory.Memory, dst []Range) ([]Range, error) {
	out := dst[:0]
	var first error
	note := func(i int, b queue.Buffer, err error) {
		if first == nil {
			first = &RequestError{Buffer: i, Addr: b.Addr, Len: uint64(b.Len), Err: err}
		}
	}
	if len(c.Readable) > 0 {
		note(0, c.Readable[0], ErrWrongDirection)
	}
	for i, b := range c.Writable {
		if b.Len == 0 {
			continue
		}
		if len(out) == MaxReportRanges {
			note(i, b, ErrTooManyRanges)
			break
		}
		if _, err := mem.Slice(b.Addr, uint64(b.Len)); err != nil {
			note(i, b, err)
			continue
		}
		start := (uint64(b.Addr) + PageSize - 1) &^ (PageSize - 1)
		end := (uint64(b.Addr) + uint64(b.Len)) &^ (PageSize - 1) // no overflow: the range is in RAM
		if start != uint64(b.Addr) || end != uint64(b.Addr)+uint64(b.Len) {
			note(i, b, ErrMisaligned)
		}
		if start < uint64(b.Addr) || start >= end { // wrapped at the top, or under a page
			continue
		}
		out = append(out, Range{Addr: memory.GuestAddress(start), Len: end - start})
	}
	return out, first
}
