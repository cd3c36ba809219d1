package balloon

import (
	"encoding/binary"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// Statistics tags (struct virtio_balloon_stat, spec 5.5.6.3). The values
// Linux reports for memory sizes are in bytes.
const (
	TagSwapIn             = 0
	TagSwapOut            = 1
	TagMajorFaults        = 2
	TagMinorFaults        = 3
	TagFreeMemory         = 4
	TagTotalMemory        = 5
	TagAvailableMemory    = 6
	TagDiskCaches         = 7
	TagHugetlbAllocations = 8
	TagHugetlbFailures    = 9
)

// statNames names the tags as Firecracker and Cloud Hypervisor do.
var statNames = [...]string{
	TagSwapIn:             "swap_in",
	TagSwapOut:            "swap_out",
	TagMajorFaults:        "major_faults",
	TagMinorFaults:        "minor_faults",
	TagFreeMemory:         "free_memory",
	TagTotalMemory:        "total_memory",
	TagAvailableMemory:    "available_memory",
	TagDiskCaches:         "disk_caches",
	TagHugetlbAllocations: "hugetlb_allocations",
	TagHugetlbFailures:    "hugetlb_failures",
}

// StatName returns the name of a statistics tag, or "" for a tag this
// device does not know.
func StatName(tag uint16) string {
	if int(tag) < len(statNames) {
		return statNames[tag]
	}
	return ""
}

// Stats are the guest's statistics by name, holding only the tags it
// reported.
type Stats map[string]uint64

const (
	statEntrySize = 10 // le16 tag, le64 value, packed
	// MaxStatsEntries bounds what is read of a statistics buffer: Linux
	// 6.1 sends 10 entries and later kernels 16.
	MaxStatsEntries = 64
)

// ParseStats decodes the entries of a statistics buffer: the chain's
// device-readable buffers taken as one byte stream, at most
// MaxStatsEntries entries of it copied out of guest memory. Unknown tags
// are skipped; a repeated tag keeps its last value. The first problem is
// reported as a *RequestError while the entries read are still returned.
func ParseStats(c queue.Chain, mem *memory.Memory) (Stats, error) {
	var raw [MaxStatsEntries * statEntrySize]byte
	n := 0
	var first error
	note := func(i int, b queue.Buffer, err error) {
		if first == nil {
			first = &RequestError{Buffer: i, Addr: b.Addr, Len: uint64(b.Len), Err: err}
		}
	}
	if len(c.Writable) > 0 {
		note(0, c.Writable[0], ErrWrongDirection)
	}
	var total uint64
	for i, b := range c.Readable {
		total += uint64(b.Len)
		take := min(uint64(b.Len), uint64(len(raw)-n))
		if take < uint64(b.Len) {
			note(i, b, ErrTooManyStats)
		}
		if take == 0 {
			continue
		}
		if err := mem.ReadAt(raw[n:n+int(take)], b.Addr); err != nil {
			note(i, b, err)
			continue
		}
		n += int(take)
	}
	if total%statEntrySize != 0 && len(c.Readable) > 0 {
		last := len(c.Readable) - 1
		note(last, c.Readable[last], ErrPartialEntry)
	}
	stats := Stats{}
	for off := 0; off+statEntrySize <= n; off += statEntrySize {
		tag := binary.LittleEndian.Uint16(raw[off:])
		if name := StatName(tag); name != "" {
			stats[name] = binary.LittleEndian.Uint64(raw[off+2:])
		}
	}
	return stats, first
}
