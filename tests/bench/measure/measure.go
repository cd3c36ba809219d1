// Package measure reads the figures the VMM benchmarks compare: VM exits
// counted by the host kernel's kvm tracepoints (through hist triggers),
// a VMM's own memory from /proc/PID/smaps, and medians.
package measure

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Median of xs; NaN-free input assumed, 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Memory is a process's resident memory split into guest RAM and the rest.
type Memory struct {
	RSS      uint64 // bytes resident in every mapping
	GuestRSS uint64 // bytes resident in the guest RAM mappings
	FileRSS  uint64 // bytes resident in file mappings: the program and its libraries
}

// Own is the VMM's own resident memory: RSS minus guest RAM pages.
func (m Memory) Own() uint64 { return m.RSS - m.GuestRSS }

// ReadSmaps sums /proc/PID/smaps. Guest RAM is every anonymous private
// mapping at least guestRAM bytes long: both gvmm and QEMU map RAM that
// way, and nothing else of theirs comes near that size.
func ReadSmaps(r io.Reader, guestRAM uint64) (Memory, error) {
	var (
		m           Memory
		guest, file bool
		seen        bool
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") {
			// A mapping's header: range perms offset dev inode [path].
			if len(f) < 5 {
				return Memory{}, fmt.Errorf("smaps: bad mapping line %q", sc.Text())
			}
			size, err := rangeSize(f[0])
			if err != nil {
				return Memory{}, err
			}
			anon := f[4] == "0" && (len(f) == 5 || strings.HasPrefix(f[5], "[anon:"))
			guest = anon && size >= guestRAM
			file = f[4] != "0"
			seen = true
			continue
		}
		if f[0] != "Rss:" || len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("smaps: %q: %w", sc.Text(), err)
		}
		m.RSS += kb << 10
		switch {
		case guest:
			m.GuestRSS += kb << 10
		case file:
			m.FileRSS += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return Memory{}, fmt.Errorf("smaps: %w", err)
	}
	if !seen {
		return Memory{}, fmt.Errorf("smaps: no mappings")
	}
	return m, nil
}

func rangeSize(s string) (uint64, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(lo, 16, 64)
	b, err2 := strconv.ParseUint(hi, 16, 64)
	if !ok || err1 != nil || err2 != nil || b < a {
		return 0, fmt.Errorf("smaps: bad address range %q", s)
	}
	return b - a, nil
}
