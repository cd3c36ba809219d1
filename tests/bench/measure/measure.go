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
	"time"
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

// Memory is a process's resident memory split into guest RAM and the
// rest, each as RSS and as PSS (a page shared by n processes counted 1/n:
// what one more VMM of several really costs).
type Memory struct {
	RSS      uint64 // bytes resident in every mapping
	GuestRSS uint64 // bytes resident in the guest RAM mappings
	FileRSS  uint64 // bytes resident in file mappings: the program and its libraries
	PSS      uint64
	GuestPSS uint64
	FilePSS  uint64
	// Huge and GuestHuge are the bytes in transparent huge pages
	// (AnonHugePages), in every mapping and in guest RAM.
	Huge      uint64
	GuestHuge uint64
}

// Own is the VMM's own resident memory: RSS minus guest RAM pages.
func (m Memory) Own() uint64 { return m.RSS - m.GuestRSS }

// OwnPSS is Own as proportional set size.
func (m Memory) OwnPSS() uint64 { return m.PSS - m.GuestPSS }

// OwnHuge is the VMM's own memory in transparent huge pages.
func (m Memory) OwnHuge() uint64 { return m.Huge - m.GuestHuge }

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
		var notFile uint64 // anonymous huge pages are no file's
		total, inGuest, inFile := &m.RSS, &m.GuestRSS, &m.FileRSS
		switch f[0] {
		case "Rss:":
		case "Pss:":
			total, inGuest, inFile = &m.PSS, &m.GuestPSS, &m.FilePSS
		case "AnonHugePages:":
			total, inGuest, inFile = &m.Huge, &m.GuestHuge, &notFile
		default:
			continue
		}
		if len(f) < 2 {
			return Memory{}, fmt.Errorf("smaps: bad line %q", sc.Text())
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("smaps: %q: %w", sc.Text(), err)
		}
		*total += kb << 10
		switch {
		case guest:
			*inGuest += kb << 10
		case file:
			*inFile += kb << 10
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

// CPU is a process's CPU time so far, from /proc/PID/stat.
type CPU struct {
	User, System, Guest time.Duration // Guest (in guest mode) is part of User
}

// Host is the time spent outside guest mode: the VMM's own work and the
// host kernel's on its behalf.
func (c CPU) Host() time.Duration { return c.User + c.System - c.Guest }

// Sub is the CPU time between two readings.
func (c CPU) Sub(d CPU) CPU {
	return CPU{User: c.User - d.User, System: c.System - d.System, Guest: c.Guest - d.Guest}
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times, 100 on x86.
const clockTick = 10 * time.Millisecond

// ParseStat reads utime, stime and guest_time (fields 14, 15 and 43) of
// a /proc/PID/stat line.
func ParseStat(line string) (CPU, error) {
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return CPU{}, fmt.Errorf("measure: stat line %q", line)
	}
	f := strings.Fields(line[i+1:]) // from field 3 on
	if len(f) < 41 {
		return CPU{}, fmt.Errorf("measure: stat line has %d fields", len(f)+2)
	}
	var ticks [3]uint64
	for j, idx := range []int{14, 15, 43} {
		n, err := strconv.ParseUint(f[idx-3], 10, 64)
		if err != nil {
			return CPU{}, fmt.Errorf("measure: stat field %d: %w", idx, err)
		}
		ticks[j] = n
	}
	return CPU{User: time.Duration(ticks[0]) * clockTick, System: time.Duration(ticks[1]) * clockTick,
		Guest: time.Duration(ticks[2]) * clockTick}, nil
}
