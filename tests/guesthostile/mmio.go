package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
)

// Fixed addresses of the PC layout the sweep avoids: the in-kernel
// irqchip (not the VMM's code; garbage there kills the guest's interrupts)
// and the pages KVM keeps for itself.
const (
	ioapicPage = 0xfec00000
	lapicPage  = 0xfee00000
	kvmPrivate = 0xfeffc000 // identity map and TSS, 4 pages
	holeStart  = 0xc0000000
	pageSize   = 4096
)

type span struct{ start, end uint64 }

func (s span) has(a uint64) bool { return a >= s.start && a < s.end }

// sweepMMIO reads and writes garbage through /dev/mem at one offset per
// step of the MMIO hole, and per 16 MiB between the end of RAM and the
// hole, at widths 1, 2, 4 and 8 in turn. Pages of the PCI
// BARs and the configuration space of existing functions are skipped:
// garbage there belongs to the config and bar phases, and the kept disk
// must keep working.
func (h *hostile) sweepMMIO(step uint64) (int, error) {
	if step == 0 || step%pageSize != 0 {
		return 0, fmt.Errorf("gvmm.mmiostep=%d: want a multiple of 4096", step)
	}
	skip, err := busyRanges()
	if err != nil {
		return 0, err
	}
	f, err := os.OpenFile("/dev/mem", os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	rng := newRand(0x3317)
	var n, denied, faults int
	sweep := func(from, to, stride uint64) {
		for a := (from + stride - 1) / stride * stride; a < to; a += stride {
			if slices.ContainsFunc(skip, func(s span) bool { return s.has(a) }) {
				continue
			}
			w, err := unix.Mmap(int(f.Fd()), int64(a), pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				denied++ // a region a driver holds (CONFIG_IO_STRICT_DEVMEM)
				continue
			}
			size := 1 << (a / stride % 4)
			off := rng.u64() % pageSize &^ uint64(size-1)
			if !touchMem(window{w}, off, size, rng.u64()) {
				faults++
			}
			n += 2
			if err := unix.Munmap(w); err != nil {
				guest.Report("error", fmt.Sprintf("munmap /dev/mem: %v", err))
			}
		}
	}
	sweep(h.ramEnd, holeStart, 16*mib)
	sweep(holeStart, 1<<32, step)
	guest.Report("mmio", fmt.Sprintf("skipped_ranges=%d denied_pages=%d faults=%d", len(skip), denied, faults))
	return n, nil
}

// touchMem reads and writes v at off; false if the access faulted.
func touchMem(w window, off uint64, size int, v uint64) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	w.read(off, size)
	w.write(off, size, v)
	return true
}

// busyRanges lists what the sweep must not touch: every PCI memory BAR,
// the ECAM pages of existing functions, the irqchip and KVM's pages.
func busyRanges() ([]span, error) {
	out := []span{
		{ioapicPage, ioapicPage + pageSize},
		{lapicPage, lapicPage + pageSize},
		{kvmPrivate, kvmPrivate + 4*pageSize},
	}
	ecam, err := ecamBase()
	if err != nil {
		return nil, err
	}
	fns, _ := filepath.Glob("/sys/bus/pci/devices/0000:00:*")
	for _, fn := range fns {
		var dev, f uint64
		if _, err := fmt.Sscanf(filepath.Base(fn), "0000:00:%x.%x", &dev, &f); err != nil {
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		a := ecam + dev<<15 | f<<12
		out = append(out, span{a, a + pageSize})
		bars, err := memoryBARs(fn)
		if err != nil {
			return nil, err
		}
		out = append(out, bars...)
	}
	return out, nil
}

// memoryBARs reads a function's memory BARs from sysfs, page-aligned.
func memoryBARs(fn string) ([]span, error) {
	const ioresourceMem = 0x200
	f, err := os.Open(fn + "/resource")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []span
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan() && i < 6; i++ {
		var v [3]uint64 // start, end, flags
		f := strings.Fields(sc.Text())
		for j := range v {
			var err error
			if j >= len(f) {
				return nil, fmt.Errorf("%s/resource: line %q", fn, sc.Text())
			}
			if v[j], err = strconv.ParseUint(f[j], 0, 64); err != nil {
				return nil, fmt.Errorf("%s/resource: %w", fn, err)
			}
		}
		start, end, flags := v[0], v[1], v[2]
		if flags&ioresourceMem != 0 && end > start {
			out = append(out, span{start &^ (pageSize - 1), (end + pageSize) &^ (pageSize - 1)})
		}
	}
	return out, sc.Err()
}

// ecamBase finds the ECAM window of bus 0 in /proc/iomem.
func ecamBase() (uint64, error) {
	data, err := os.ReadFile("/proc/iomem")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, "MMCONFIG") && !strings.Contains(line, "ECAM") {
			continue
		}
		r, _, _ := strings.Cut(strings.TrimSpace(line), "-")
		return strconv.ParseUint(r, 16, 64)
	}
	return 0, errors.New("no ECAM window in /proc/iomem")
}
