// Package bench compares gvmm with QEMU (-M microvm, from Debian) booting
// the same stock kernel and initramfs with the same vCPUs and memory in
// the same KVM host, one run of each after the other: boot time, VM exits
// by reason, the VMM's own memory, virtio-blk throughput and ten guests
// at once. make bench runs it; each benchmark prints its figures as
// Markdown table rows ("BENCHMD ") and JSON objects ("BENCHJSON ").
//
// Without /dev/kvm it runs inside the KVM test host, where everything is
// emulated: times are slow and noisy, while counts (exits, bytes) are
// stable and the ratios between the two VMMs are what matters.
package bench

import (
	"bytes"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/tests/bench/measure"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

const (
	guestCPUs = 1
	guestMiB  = 256
	// quiet: the kernel's boot messages would otherwise dominate the
	// exits of both VMMs (each byte to the UART is two exits).
	cmdline   = "console=ttyS0 reboot=k panic=1 quiet"
	vmTimeout = 6 * time.Minute
	mib       = 1 << 20
	// concurrent is how many guests BenchmarkStartTogether starts at once.
	concurrent = 10
)

// guestModules are the virtio drivers of both VMMs' disks: PCI (gvmm)
// and MMIO (QEMU's microvm), loaded by guestbench in its blk mode; the
// 9p client of its 9p mode; and overlayfs, which gvmm exec's guest loads
// with the others.
var guestModules = []string{"virtio_blk", "virtio_pci", "virtio_mmio", "9pnet_virtio", "9p", "overlay"}

// vsockModules are what BenchmarkVsock's guest loads: both transports
// and the kernel's virtio vsock driver.
var vsockModules = []string{"virtio_pci", "virtio_mmio", "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"}

func TestMain(m *testing.M) {
	flag.Parse()
	// The package has benchmarks only: without -test.bench (as in make
	// test) there is nothing to run, and no test host to boot for it.
	if flag.Lookup("test.bench").Value.String() == "" {
		os.Exit(m.Run())
	}
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestbench", "github.com/gvmm-dev/gvmm/tests/guestbench"),
		kvmhost.WithQEMU(),
		kvmhost.WithHostProgram("busybox"),
		kvmhost.WithModules(guestModules...),
		// BenchmarkVsock: its guest, and QEMU's vhost backend in the host.
		kvmhost.WithBinary("guestvsock", "github.com/gvmm-dev/gvmm/tests/guestvsock"),
		kvmhost.WithModules(vsockModules...),
		kvmhost.WithHostModules("vhost_vsock"),
		// BenchmarkNet: its guest, the TAP and QEMU's vhost-net.
		kvmhost.WithBinary("guestnet", "github.com/gvmm-dev/gvmm/tests/guestnet"),
		kvmhost.WithModules(netModules...),
		kvmhost.WithHostModules("tun", "vhost_net"),
	)
}

// rounds is how many runs of each VMM a benchmark makes, alternating.
func rounds(key string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil && n > 0 {
		return n
	}
	return def
}

// spec returns the guest both VMMs boot, with the command line keys.
func spec(b *testing.B, keys ...string) guestSpec {
	b.Helper()
	k, err := debkernel.Get()
	if err != nil {
		b.Fatal(err)
	}
	mods, err := k.Modules(guestModules...)
	if err != nil {
		b.Fatal(err)
	}
	initrd := filepath.Join(b.TempDir(), "guest.cpio")
	if err := initramfs.WriteGuest(initrd, kvmhost.Asset("guestbench"), mods); err != nil {
		b.Fatal(err)
	}
	base := cmdline
	if c := os.Getenv("GVMM_BENCH_CMDLINE"); c != "" {
		base = c // to look into a boot, e.g. without quiet
	}
	return guestSpec{kernel: k.Vmlinuz, initrd: initrd, cmdline: strings.Join(append([]string{base}, keys...), " ")}
}

// samples collects one figure per run and VMM.
type samples map[string]map[string][]float64 // metric -> VMM -> values

func (s samples) add(metric, vmm string, v float64) {
	if s[metric] == nil {
		s[metric] = map[string][]float64{}
	}
	s[metric][vmm] = append(s[metric][vmm], v)
}

// addCounts adds a run's counts under prefix+name(key).
func (s samples) addCounts(prefix, vmm string, c measure.Counts, name func(string) string) {
	for k, n := range c {
		s.add(prefix+name(k), vmm, float64(n))
	}
}

// row is one line of the results.
type row struct {
	Benchmark string   `json:"benchmark"`
	Metric    string   `json:"metric"`
	Unit      string   `json:"unit"`
	Runs      int      `json:"runs"`
	GVMM      *float64 `json:"gvmm,omitempty"`
	QEMU      *float64 `json:"qemu,omitempty"`
	Ratio     *float64 `json:"ratio,omitempty"` // gvmm/QEMU, medians
	Target    string   `json:"target,omitempty"`
	Met       *bool    `json:"met,omitempty"`
}

// target is a goal for one metric: on the ratio gvmm/QEMU or, with
// absolute set, on gvmm's own figure.
type target struct {
	desc     string
	absolute bool
	ok       func(float64) bool
}

var (
	atMost08   = target{desc: "ratio ≤ 0.8", ok: func(r float64) bool { return r <= 0.8 }}
	atMost07   = target{desc: "ratio ≤ 0.7", ok: func(r float64) bool { return r <= 0.7 }}
	atLeast1   = target{desc: "ratio ≥ 1.0", ok: func(r float64) bool { return r >= 1.0 }}
	atMost5MiB = target{desc: "gvmm ≤ 5 MiB", absolute: true, ok: func(v float64) bool { return v <= 5 }}
)

// emit prints the medians of metric as a row, reports them as benchmark
// metrics, and returns the row.
func emit(b *testing.B, s samples, metric, unit string, t *target) {
	b.Helper()
	per := s[metric]
	r := row{Benchmark: strings.TrimPrefix(b.Name(), "Benchmark"), Metric: metric, Unit: unit,
		Runs: len(per[gvmm.name])}
	// A VMM without samples (its runs failed) has no figure, not a zero.
	median := func(v vmm) *float64 {
		if len(per[v.name]) == 0 {
			return nil
		}
		m := measure.Median(per[v.name])
		return &m
	}
	r.GVMM, r.QEMU = median(gvmm), median(qemu)
	if r.GVMM != nil && r.QEMU != nil && *r.QEMU != 0 {
		ratio := *r.GVMM / *r.QEMU
		r.Ratio = &ratio
	}
	if t != nil {
		r.Target = t.desc
		switch {
		case t.absolute && r.GVMM != nil:
			met := t.ok(*r.GVMM)
			r.Met = &met
		case !t.absolute && r.Ratio != nil:
			met := t.ok(*r.Ratio)
			r.Met = &met
		}
	}
	js, err := json.Marshal(r)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("BENCHJSON %s\n", js)
	cell := func(p *float64) string {
		if p == nil {
			return "–"
		}
		return strconv.FormatFloat(round(*p), 'f', -1, 64)
	}
	met := ""
	if r.Met != nil {
		met = map[bool]string{true: "met", false: "**not met**"}[*r.Met]
	}
	fmt.Printf("BENCHMD | %s | %s (%s) | %s | %s | %s | %s %s |\n", r.Benchmark, metric, unit,
		cell(r.GVMM), cell(r.QEMU), cell(r.Ratio), r.Target, met)
	unitName := strings.NewReplacer(" ", "-", "(", "", ")", "", "/", "-per-").Replace(metric + "-" + unit)
	for _, f := range []struct {
		prefix string
		v      *float64
	}{{"gvmm-", r.GVMM}, {"qemu-", r.QEMU}} {
		if f.v != nil {
			b.ReportMetric(*f.v, f.prefix+unitName)
		}
	}
}

func round(v float64) float64 {
	if v >= 100 || v <= -100 {
		return float64(int64(v + 0.5))
	}
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 3, 64), 64)
	return f
}

// top returns the metrics of prefix whose median, for either VMM, is at
// least share of total's, largest first.
func top(s samples, prefix string, total float64, share float64) []string {
	var out []string
	for m, per := range s {
		if !strings.HasPrefix(m, prefix) {
			continue
		}
		for _, v := range per {
			if measure.Median(v) >= share*total {
				out = append(out, m)
				break
			}
		}
	}
	largest := func(m string) float64 {
		return max(measure.Median(s[m][gvmm.name]), measure.Median(s[m][qemu.name]))
	}
	slices.SortFunc(out, func(a, b string) int {
		return cmp.Or(cmp.Compare(largest(b), largest(a)), strings.Compare(a, b))
	})
	return out
}

// pad fills in zero for the runs in which a counted key never occurred,
// so that medians are over every run.
func pad(s samples, prefix string, runs int) {
	for m, per := range s {
		if !strings.HasPrefix(m, prefix) {
			continue
		}
		for _, v := range vmms {
			for len(per[v.name]) < runs {
				per[v.name] = append(per[v.name], 0)
			}
		}
	}
}

// Hist triggers for the exits of a boot.
var (
	exitHist  = measure.Hist{Event: "kvm/kvm_exit", Keys: []string{"exit_reason"}}
	userHist  = measure.Hist{Event: "kvm/kvm_userspace_exit", Keys: []string{"reason"}}
	pioHist   = measure.Hist{Event: "kvm/kvm_pio", Keys: []string{"port", "rw"}}
	msrHist   = measure.Hist{Event: "kvm/kvm_msr", Keys: []string{"ecx", "write"}}
	mmioHist  = measure.Hist{Event: "kvm/kvm_mmio", Keys: []string{"type"}}
	bootHists = []measure.Hist{exitHist, userHist, pioHist, msrHist, mmioHist}
)

// count attaches hists afresh, runs fn and returns their counts by event.
func count(b *testing.B, tr measure.Tracing, hists []measure.Hist, fn func()) map[string]measure.Counts {
	b.Helper()
	for _, h := range hists {
		if err := tr.Start(h); err != nil {
			b.Fatal(err)
		}
		defer tr.Stop(h)
	}
	fn()
	counts := map[string]measure.Counts{}
	for _, h := range hists {
		c, err := tr.Read(h)
		if err != nil {
			b.Fatal(err)
		}
		counts[h.Event] = c
	}
	return counts
}

// BenchmarkBoot boots each VMM in turn, GVMM_BENCH_ROUNDS times each
// (default 5), to the guest's init, which then waits: the exits and the
// VMM's memory are read there, then the guest is told to power off.
func BenchmarkBoot(b *testing.B) {
	tr, err := measure.FindTracing()
	if err != nil {
		b.Fatal(err)
	}
	// kvm_exit's reasons are SVM exit codes on AMD, VMX reasons on Intel.
	_, amdErr := os.Stat("/sys/module/kvm_amd")
	isSVM := amdErr == nil
	n := rounds("GVMM_BENCH_ROUNDS", 5)
	g := spec(b, "gvmm.bench=wait")
	s := samples{}
	for range b.N {
		for i := 0; i < n; i++ {
			for _, v := range vmms {
				bootOnce(b, tr, isSVM, v, g, s)
			}
		}
	}
	for _, p := range []string{"exit ", "user exit ", "port ", "msr ", "mmio "} {
		pad(s, p, n*b.N)
	}
	b.ReportMetric(0, "ns/op")
	emit(b, s, "process start to init, from the console", "ms", &atMost08)
	emit(b, s, "process start to init, gvmm's boot timer port", "ms", nil)
	emit(b, s, "power-off, request to VMM exit", "ms", nil)
	emit(b, s, "VM exits until init", "exits", &atMost07)
	total := measure.Median(s["VM exits until init"][qemu.name])
	for _, m := range top(s, "exit ", total, 0.01) {
		emit(b, s, m, "exits", nil)
	}
	emit(b, s, "exits to user space", "exits", nil)
	for _, m := range top(s, "user exit ", 1, 1) {
		emit(b, s, m, "exits", nil)
	}
	for _, m := range top(s, "port ", total, 0.002) {
		emit(b, s, m, "accesses", nil)
	}
	for _, m := range top(s, "msr ", total, 0.002) {
		emit(b, s, m, "accesses", nil)
	}
	for _, m := range top(s, "mmio ", 1, 1) {
		emit(b, s, m, "accesses", nil)
	}
	// The memory target is on PSS with ten running
	// (BenchmarkStartTogether): one VMM alone has the binary's pages to
	// itself.
	emitMemory(b, s, "", nil)
}

func bootOnce(b *testing.B, tr measure.Tracing, svm bool, v vmm, g guestSpec, s samples) {
	var r *running
	counts := count(b, tr, bootHists, func() {
		r = start(b, v, g)
		r.waitReport(b, "waiting")
	})
	mem := r.memory(b)
	off := time.Now()
	if _, err := r.stdin.Write([]byte("poweroff\n")); err != nil {
		b.Fatal(err)
	}
	r.wait(b)
	if os.Getenv("GVMM_BENCH_CONSOLE") != "" {
		b.Logf("%s console:\n%s", v.name, r.out.String())
	}
	atInit, _ := r.out.FirstAt("init")
	s.add("process start to init, from the console", v.name, ms(atInit.Sub(r.start)))
	if v.name == gvmm.name {
		t, err := r.bootTimer()
		if err != nil {
			b.Fatalf("%v\n%s", err, r.output())
		}
		s.add("process start to init, gvmm's boot timer port", v.name, ms(t.Sub(r.start)))
	}
	s.add("power-off, request to VMM exit", v.name, ms(r.exited.Sub(off)))
	s.add("VM exits until init", v.name, float64(counts[exitHist.Event].Total()))
	s.add("exits to user space", v.name, float64(counts[userHist.Event].Total()))
	s.addCounts("exit ", v.name, counts[exitHist.Event], func(k string) string {
		code, _ := strconv.ParseUint(k, 10, 64)
		return measure.ExitName(svm, code)
	})
	s.addCounts("user exit ", v.name, counts[userHist.Event], func(k string) string {
		code, _ := strconv.ParseUint(k, 10, 32)
		return kvm.ExitReason(code).String()
	})
	s.addCounts("", v.name, counts[pioHist.Event], hexPort)
	s.addCounts("msr ", v.name, counts[msrHist.Event], func(k string) string {
		ecx, w, _ := strings.Cut(k, ",")
		n, _ := strconv.ParseUint(ecx, 10, 32)
		return fmt.Sprintf("%#x %s", n, map[string]string{"0": "read", "1": "write"}[w])
	})
	s.addCounts("mmio ", v.name, counts[mmioHist.Event], func(k string) string {
		return map[string]string{"0": "unsatisfied read", "1": "read", "2": "write"}[k]
	})
	addMemory(s, "", v.name, mem)
}

// memoryRows are the figures of a VMM's memory, in MiB.
var memoryRows = []struct {
	name  string
	value func(measure.Memory) uint64
}{
	{"VMM own memory (RSS − guest RAM)", measure.Memory.Own},
	{"VMM own memory: file-backed (program, libraries)", func(m measure.Memory) uint64 { return m.FileRSS }},
	{"VMM own memory: anonymous (heap, stacks)", func(m measure.Memory) uint64 { return m.Own() - m.FileRSS }},
	{"VMM RSS", func(m measure.Memory) uint64 { return m.RSS }},
	{ownPSS, measure.Memory.OwnPSS},
	{"VMM own memory, PSS: file-backed", func(m measure.Memory) uint64 { return m.FilePSS }},
	{"VMM own memory in transparent huge pages", measure.Memory.OwnHuge},
}

// ownPSS is the memory row a target may be set on.
const ownPSS = "VMM own memory, PSS (PSS − guest RAM's)"

// addMemory adds the VMM's own memory, prefix naming how many run.
func addMemory(s samples, prefix, vmm string, mem measure.Memory) {
	for _, r := range memoryRows {
		s.add(prefix+r.name, vmm, float64(r.value(mem))/mib)
	}
}

// emitMemory emits what addMemory added, own PSS against pss if set.
func emitMemory(b *testing.B, s samples, prefix string, pss *target) {
	for _, r := range memoryRows {
		var t *target
		if r.name == ownPSS {
			t = pss
		}
		emit(b, s, prefix+r.name, "MiB", t)
	}
}

// BenchmarkBlk measures virtio-blk inside the guest, on one image file
// for both VMMs: sequential write and read of 128 MiB in 1 MiB blocks and
// 3000 random reads of 4 KiB, all O_DIRECT, GVMM_BENCH_ROUNDS times each
// (default 3).
func BenchmarkBlk(b *testing.B) {
	tr, err := measure.FindTracing()
	if err != nil {
		b.Fatal(err)
	}
	n := rounds("GVMM_BENCH_ROUNDS", 3)
	g := spec(b, "gvmm.bench=blk", "gvmm.mib=128", "gvmm.randops=3000")
	g.disk = filepath.Join(b.TempDir(), "bench.img")
	// Written out in full: reads must not be served from holes.
	if err := os.WriteFile(g.disk, make([]byte, 160*mib), 0o644); err != nil {
		b.Fatal(err)
	}
	s := samples{}
	for range b.N {
		for i := 0; i < n; i++ {
			for _, v := range vmms {
				r := start(b, v, g)
				// The guest waits, disk open, for the go-ahead: the exits
				// counted are the disk test's alone.
				r.waitReport(b, "ready")
				// CPU time at the start and as each phase reports its end
				// (read within the harness's 10 ms poll, in 10 ms ticks).
				var cpu [4]measure.CPU
				var threads [4]map[string]threadUse
				counts := count(b, tr, []measure.Hist{exitHist, userHist}, func() {
					cpu[0], threads[0] = r.cpu(b), r.threads(b)
					if _, err := r.stdin.Write([]byte("go\n")); err != nil {
						b.Fatal(err)
					}
					for i, key := range []string{"write_mbps", "read_mbps", "waiting"} {
						r.waitReport(b, key)
						cpu[i+1], threads[i+1] = r.cpu(b), r.threads(b)
					}
				})
				if _, err := r.stdin.Write([]byte("poweroff\n")); err != nil {
					b.Fatal(err)
				}
				r.wait(b)
				s.add("sequential write", v.name, r.report(b, "write_mbps"))
				s.add("sequential read", v.name, r.report(b, "read_mbps"))
				s.add("4 KiB random read", v.name, r.report(b, "randread_iops"))
				for i, phase := range []string{"sequential write", "sequential read", "random reads"} {
					d := cpu[i+1].Sub(cpu[i])
					s.add("VMM CPU time outside the guest: "+phase, v.name, ms(d.Host()))
					s.add("guest CPU time: "+phase, v.name, ms(d.Guest))
					all, onVCPUs := switches(threads[i], threads[i+1])
					s.add("VMM context switches: "+phase, v.name, float64(all))
					s.add("VMM context switches on vCPU threads: "+phase, v.name, float64(onVCPUs))
				}
				reads, writes, _ := strings.Cut(strings.Join(r.out.Values("requests"), ""), "+")
				for _, rw := range []struct{ name, n string }{{"read", reads}, {"write", writes}} {
					n, err := strconv.Atoi(rw.n)
					if err != nil {
						b.Fatalf("%s: guest requests %q: %v", v.name, r.out.Values("requests"), err)
					}
					s.add(rw.name+" requests the guest sent", v.name, float64(n))
				}
				s.add("VM exits during the disk test", v.name, float64(counts[exitHist.Event].Total()))
				s.add("exits to user space during the disk test", v.name, float64(counts[userHist.Event].Total()))
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	emit(b, s, "sequential write", "MB/s", &atLeast1)
	emit(b, s, "sequential read", "MB/s", &atLeast1)
	emit(b, s, "4 KiB random read", "IOPS", &atLeast1)
	emit(b, s, "read requests the guest sent", "requests", nil)
	emit(b, s, "write requests the guest sent", "requests", nil)
	emit(b, s, "VM exits during the disk test", "exits", nil)
	emit(b, s, "exits to user space during the disk test", "exits", nil)
	for _, phase := range []string{"sequential write", "sequential read", "random reads"} {
		emit(b, s, "VMM CPU time outside the guest: "+phase, "ms", nil)
		emit(b, s, "guest CPU time: "+phase, "ms", nil)
		emit(b, s, "VMM context switches: "+phase, "switches", nil)
		emit(b, s, "VMM context switches on vCPU threads: "+phase, "switches", nil)
	}
}

// BenchmarkStartTogether starts ten guests of one VMM at once and times
// them until every one reached init; with all ten waiting there, it reads
// each VMM's memory (PSS shares the program's pages among the ten), then
// has them power off and times until every one did; GVMM_BENCH_ROUNDS10 rounds of each VMM (default 1). A guest that fails
// fails the benchmark, but the other VMM's figures are still reported:
// under QEMU 7.2's emulation, ten KVM guests at once made the test host's
// SVM misbehave (see docs/benchmarks.md).
func BenchmarkStartTogether(b *testing.B) {
	n := rounds("GVMM_BENCH_ROUNDS10", 1)
	g := spec(b, "gvmm.bench=wait")
	s := samples{}
	allInit := fmt.Sprintf("%d guests: all at init", concurrent)
	allOff := fmt.Sprintf("%d guests: all powered off", concurrent)
	each := fmt.Sprintf("%d guests running, each ", concurrent)
	for range b.N {
		for i := 0; i < n; i++ {
			for _, v := range vmms {
				t0 := time.Now()
				rs := make([]*running, concurrent)
				for j := range rs {
					rs[j] = start(b, v, g)
				}
				// Every guest waits at init: the memory of each VMM is
				// read with all ten running, then all are told to power
				// off.
				for _, r := range rs {
					if _, err := r.reported("waiting"); err == nil {
						addMemory(s, each, v.name, r.memory(b))
					}
				}
				for _, r := range rs {
					_, _ = r.stdin.Write([]byte("poweroff\n")) // one that ended already fails below
				}
				var lastInit, lastExit time.Time
				failed := 0
				for _, r := range rs {
					if err := r.result(); err != nil {
						b.Errorf("one of %d guests at once: %v", concurrent, err)
						failed++
						continue
					}
					at, _ := r.out.FirstAt("init")
					lastInit = maxTime(lastInit, at)
					lastExit = maxTime(lastExit, r.exited)
				}
				s.add(fmt.Sprintf("%d guests: failed", concurrent), v.name, float64(failed))
				if failed == 0 {
					s.add(allInit, v.name, ms(lastInit.Sub(t0)))
					s.add(allOff, v.name, ms(lastExit.Sub(t0)))
				}
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	emit(b, s, allInit, "ms", nil)
	emit(b, s, allOff, "ms", nil)
	emitMemory(b, s, each, &atMost5MiB)
	emit(b, s, fmt.Sprintf("%d guests: failed", concurrent), "guests", nil)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// shareFileMiB is the file Benchmark9p reads, and as much it writes.
const shareFileMiB = 64

// p9Phases are Benchmark9p's metrics, each with the guest's report that
// ends it and the one of its bytes; a phase's CPU, switches and exits
// count from the report that ends the one before (the go-ahead for the
// first).
var p9Phases = []struct{ metric, mbps, bytes string }{
	{"9p sequential read of 64 MiB", "p9read_mbps", "p9read_bytes"},
	{"9p sequential write of 64 MiB, then fsync", "p9write_mbps", "p9write_bytes"},
}

// Benchmark9p reads a 64 MiB file of a share sequentially in the guest,
// then writes one as large and syncs it, 1 MiB reads and writes with
// msize 512000 and no page cache: gvmm's virtio-9p against QEMU's
// virtio-9p-pci (local back end, security_model=none), GVMM_BENCH_ROUNDS
// times each (default 3).
func Benchmark9p(b *testing.B) {
	n := rounds("GVMM_BENCH_ROUNDS", 3)
	g := spec(b, "gvmm.bench=9p")
	g.share = b.TempDir()
	data := make([]byte, shareFileMiB*mib)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(g.share, "big.bin"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	want := make([]byte, shareFileMiB*mib) // what the guest writes
	for i := range want {
		want[i] = byte(i * 13)
	}
	s := samples{}
	for range b.N {
		for i := 0; i < n; i++ {
			for _, v := range vmms {
				r := start(b, v, g)
				r.waitReport(b, "ready")
				before, threadsBefore, kvmBefore := r.cpu(b), r.threads(b), kvmStats(b)
				if _, err := r.stdin.Write([]byte("go\n")); err != nil {
					b.Fatal(err)
				}
				for _, ph := range p9Phases {
					r.waitReport(b, ph.bytes)
					cpu, threadsAfter, kvmAfter := r.cpu(b), r.threads(b), kvmStats(b)
					if got := r.report(b, ph.bytes); got != shareFileMiB*mib {
						b.Fatalf("%s: %s: %v bytes of %d", v.name, ph.metric, got, shareFileMiB*mib)
					}
					rate, kvm := r.report(b, ph.mbps), kvmAfter.Sub(kvmBefore)
					all, _ := switches(threadsBefore, threadsAfter)
					s.add(ph.metric, v.name, rate)
					s.add(ph.metric+", VMM outside guest mode", v.name, cpu.Sub(before).Host().Seconds())
					s.add(ph.metric+", guest mode", v.name, cpu.Sub(before).Guest.Seconds())
					s.add(ph.metric+", VMM context switches", v.name, float64(all))
					s.add(ph.metric+", KVM exits", v.name, float64(kvm["exits"]))
					b.Logf("%s, %s: %.1f MB/s; VMM outside guest mode %.2f s, guest mode %.2f s; switches %d (busiest threads %s); KVM %s",
						v.name, ph.metric, rate, cpu.Sub(before).Host().Seconds(), cpu.Sub(before).Guest.Seconds(), all,
						busiest(threadsBefore, threadsAfter, r.cmd.Process.Pid), kvmSummary(kvm))
					before, threadsBefore, kvmBefore = cpu, threadsAfter, kvmAfter
				}
				r.waitReport(b, "waiting")
				if _, err := r.stdin.Write([]byte("poweroff\n")); err != nil {
					b.Fatal(err)
				}
				r.wait(b)
				got, err := os.ReadFile(filepath.Join(g.share, "out.bin"))
				if err != nil {
					b.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					b.Fatalf("%s: the file the guest wrote over 9p differs from what it wrote", v.name)
				}
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	for _, ph := range p9Phases {
		emit(b, s, ph.metric, "MB/s", &atLeast1)
		emit(b, s, ph.metric+", VMM outside guest mode", "CPU s", nil)
		emit(b, s, ph.metric+", guest mode", "CPU s", nil)
		emit(b, s, ph.metric+", VMM context switches", "switches", nil)
		emit(b, s, ph.metric+", KVM exits", "exits", nil)
	}
}

// BenchmarkExec times gvmm exec running a command (busybox echo) in the
// test host: from gvmm's exec to the command's output on stdout (the
// command's first act), and to gvmm's exit with its status. QEMU has no
// such command: its column stays empty. GVMM_BENCH_ROUNDS runs (default 5).
func BenchmarkExec(b *testing.B) {
	k, err := debkernel.Get()
	if err != nil {
		b.Fatal(err)
	}
	n := rounds("GVMM_BENCH_ROUNDS", 5)
	s := samples{}
	for range b.N {
		for i := 0; i < n; i++ {
			out := &firstWrite{}
			cmd := exec.Command(kvmhost.Asset("gvmm"), "exec", "--kernel", k.Vmlinuz, "--modules", k.ModulesDir(),
				"--memory", strconv.Itoa(guestMiB)+"M", "--", kvmhost.Asset("busybox"), "echo", "exec-marker")
			var errb strings.Builder
			cmd.Stdout, cmd.Stderr = out, &errb
			start := time.Now()
			if err := cmd.Run(); err != nil {
				b.Fatalf("gvmm exec: %v\nstdout: %s\nstderr: %s", err, out.buf.String(), errb.String())
			}
			end := time.Since(start)
			if out.buf.String() != "exec-marker\n" {
				b.Fatalf("gvmm exec printed %q\nstderr: %s", out.buf.String(), errb.String())
			}
			s.add("gvmm exec to the command's output", gvmm.name, ms(out.at.Sub(start)))
			s.add("gvmm exec to its exit", gvmm.name, ms(end))
		}
	}
	b.ReportMetric(0, "ns/op")
	emit(b, s, "gvmm exec to the command's output", "ms", nil)
	emit(b, s, "gvmm exec to its exit", "ms", nil)
}

// firstWrite keeps what is written and when the first write came.
type firstWrite struct {
	mu  sync.Mutex
	buf bytes.Buffer
	at  time.Time
}

func (w *firstWrite) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.at.IsZero() {
		w.at = time.Now()
	}
	return w.buf.Write(p)
}
