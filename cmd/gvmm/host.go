package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/machine/api"
)

// hostInfo is what the host gives and what running VMs take of it.
type hostInfo struct {
	CPUs           int      `json:"cpus"` // logical CPUs this process may use, as machine's guard counts them
	MemoryBytes    uint64   `json:"memory_bytes"`
	AvailableBytes uint64   `json:"memory_available_bytes"`
	RunningVMs     []string `json:"running_vms"`
	VCPUs          int      `json:"vcpus"`
	CommittedBytes uint64   `json:"memory_committed_bytes"`
	BalloonBytes   uint64   `json:"balloon_actual_bytes"` // taken back from running guests by their balloons
	CPURatio       float64  `json:"vcpu_overcommit"`      // VCPUs / CPUs
	MemoryRatio    float64  `json:"memory_overcommit"`    // CommittedBytes / MemoryBytes
	KSM            *ksmInfo `json:"ksm,omitempty"`        // nil without KSM in the kernel
	PageSize       int      `json:"page_size"`
	unansweredVMMs []string // running VMs whose API did not answer
	ksmUnavailable error
}

// ksmInfo is /sys/kernel/mm/ksm: pages_shared are the merged pages kept,
// pages_sharing the guest pages mapped onto them (what is saved).
type ksmInfo struct {
	Run          int    `json:"run"` // 1 when merging
	PagesShared  uint64 `json:"pages_shared"`
	PagesSharing uint64 `json:"pages_sharing"`
}

// hostUsage measures the host, whose /proc and /sys are under sysRoot,
// and the running VMs of dir except the one named skip (about to start).
func hostUsage(dir *state.Dir, skip string, sysRoot string) (hostInfo, error) {
	h := hostInfo{CPUs: runtime.NumCPU(), PageSize: os.Getpagesize(), RunningVMs: []string{}}
	var err error
	h.MemoryBytes, h.AvailableBytes, err = memInfo(filepath.Join(sysRoot, "proc/meminfo"))
	if err != nil {
		return h, err
	}
	h.KSM, h.ksmUnavailable = readKSM(filepath.Join(sysRoot, "sys/kernel/mm/ksm"))
	names, err := dir.Names()
	if err != nil {
		return h, err
	}
	for _, name := range names {
		if name == skip {
			continue
		}
		st, err := dir.Status(name)
		if err != nil {
			return h, err
		}
		if st.State != state.Running {
			continue
		}
		def, err := dir.Load(name)
		if err != nil {
			return h, err
		}
		cpus, memory := sizeOf(def)
		h.RunningVMs = append(h.RunningVMs, name)
		h.VCPUs += cpus
		h.CommittedBytes += memory
		if info, err := vmmInfo(dir, name); err != nil {
			h.unansweredVMMs = append(h.unansweredVMMs, name)
		} else if info.Balloon != nil {
			h.BalloonBytes += info.Balloon.ActualMiB * api.MiB
		}
	}
	h.ratios()
	return h, nil
}

func (h *hostInfo) ratios() {
	if h.CPUs > 0 {
		h.CPURatio = float64(h.VCPUs) / float64(h.CPUs)
	}
	if h.MemoryBytes > 0 {
		h.MemoryRatio = float64(h.CommittedBytes) / float64(h.MemoryBytes)
	}
}

// memInfo reads MemTotal and MemAvailable from /proc/meminfo.
func memInfo(path string) (total, available uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "MemTotal" && key != "MemAvailable") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(val), "kB")), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %s: %w", path, key, err)
		}
		if key == "MemTotal" {
			total = kb << 10
		} else {
			available = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("%s: no MemTotal", path)
	}
	return total, available, nil
}

// readKSM reads the KSM counters; a kernel without KSM has no folder.
func readKSM(dir string) (*ksmInfo, error) {
	read := func(name string) (uint64, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	var k ksmInfo
	run, err := read("run")
	if err != nil {
		return nil, err
	}
	k.Run = int(run)
	if k.PagesShared, err = read("pages_shared"); err != nil {
		return nil, err
	}
	if k.PagesSharing, err = read("pages_sharing"); err != nil {
		return nil, err
	}
	return &k, nil
}

func hostCmd(c *vmCommand) func() int {
	asJSON := c.fs.Bool("json", false, "print JSON")
	return func() int {
		dir, err := c.open()
		if err != nil {
			return c.fail(err)
		}
		h, err := hostUsage(dir, "", c.env.sysRoot)
		if err != nil {
			return c.fail(err)
		}
		if *asJSON {
			enc := json.NewEncoder(c.env.stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(h); err != nil {
				return c.fail(err)
			}
		} else if err := h.print(c.env.stdout); err != nil {
			return c.fail(err)
		}
		for _, name := range h.unansweredVMMs {
			c.warn("%s's VMM does not answer: its balloon is not counted", name)
		}
		return exitOK
	}
}

func (h *hostInfo) print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "logical CPUs\t%d\n", h.CPUs)
	fmt.Fprintf(tw, "vCPUs of running VMs\t%d in %d VMs (%.2f per CPU)\n", h.VCPUs, len(h.RunningVMs), h.CPURatio)
	fmt.Fprintf(tw, "host memory\t%s (%s available)\n", humanSize(h.MemoryBytes), humanSize(h.AvailableBytes))
	fmt.Fprintf(tw, "memory committed\t%s (%.2f of host memory); balloons hold %s of it\n", humanSize(h.CommittedBytes), h.MemoryRatio, humanSize(h.BalloonBytes))
	switch k := h.KSM; {
	case k == nil:
		fmt.Fprintf(tw, "KSM\tnot available (%v)\n", h.ksmUnavailable)
	default:
		run := "not merging (run=0)"
		if k.Run == 1 {
			run = "merging"
		}
		page := uint64(h.PageSize)
		fmt.Fprintf(tw, "KSM\t%s; pages shared %d (%s), pages sharing %d (%s saved)\n",
			run, k.PagesShared, humanSize(k.PagesShared*page), k.PagesSharing, humanSize(k.PagesSharing*page))
	}
	return tw.Flush()
}

// humanSize writes a byte count in the largest binary unit below it.
func humanSize(n uint64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}
