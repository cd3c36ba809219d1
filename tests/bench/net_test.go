package bench

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/gvmm-dev/gvmm/tests/bench/measure"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// netModules are what BenchmarkNet's guest loads: the PCI transport
// (gvmm's device and QEMU's virtio-net-pci) and the kernel's virtio_net.
var netModules = []string{"virtio_pci", "virtio_net"}

// The TAP all VMMs use in turn, the host's address on it and the
// guest's, and one MAC for every guest so that the host's neighbour
// entry stays right between runs.
const (
	benchTap     = "gvbench0"
	benchHostIP  = "10.0.4.1"
	benchGuestIP = "10.0.4.2"
	benchMAC     = "52:54:00:12:34:56"
)

// qemuVhost is QEMU with the same virtio-net-pci device on the host
// kernel's vhost-net, for reference: a data path in the kernel, not the
// userspace one gvmm and plain QEMU have.
var qemuVhost = vmm{"QEMU vhost=on", func(g guestSpec) []string {
	g.tapVhost = true
	return qemu.argv(g)
}}

// The hist triggers of GVMM_BENCH_NET_COUNT, besides the VM exits:
// every thread's syscalls (the VMM's are picked out by thread id
// afterwards) and the MSIs KVM injects, the guest's interrupts of both
// VMMs' devices.
var (
	syscallHist = measure.Hist{Event: "raw_syscalls/sys_enter", Keys: []string{"common_pid", "id"}}
	msiHist     = measure.Hist{Event: "kvm/kvm_msi_set_irq", Keys: []string{"address"}}
)

// syscallNames names the x86-64 system calls a VMM's data path makes;
// others are shown by number.
var syscallNames = map[string]string{
	"0": "read", "1": "write", "7": "poll", "16": "ioctl", "19": "readv", "20": "writev",
	"24": "sched_yield", "35": "nanosleep", "202": "futex", "228": "clock_gettime", "230": "clock_nanosleep",
	"232": "epoll_wait", "233": "epoll_ctl", "270": "pselect6", "271": "ppoll",
	"281": "epoll_pwait", "441": "epoll_pwait2", "14": "rt_sigprocmask", "15": "rt_sigreturn",
	"200": "tkill", "234": "tgkill", "28": "madvise", "9": "mmap", "11": "munmap",
}

// BenchmarkNet moves vsockBytes over TCP host to guest (to the guest's
// sink) and guest to host (from its source), each on one connection,
// through the same TAP: gvmm's virtio-net, QEMU's virtio-net-pci with
// its userspace backend (vhost=off, the same kind of data path) and, for
// reference, with vhost-net (vhost=on). Both ends check a SHA-256 of
// the data. The guest is tests/guestnet for all. Every run also reports
// the VMM's CPU time outside guest mode split between its vCPU threads
// and the others, its context switches, and the frames each way through
// the TAP, whose size shows the segmentation offloads at work; with
// GVMM_BENCH_NET_COUNT=1 it counts the VMM's system calls, the VM exits
// and the guest's interrupts per transfer too, which slows every system
// call while it runs, and leaves out the vhost=on runs;
// GVMM_BENCH_NET_COUNT=exits counts the exits and interrupts alone. The
// host kernel's KVM statistics (exits by kind, halt polling) are read
// around every transfer, and each transfer is logged on its own line.
func BenchmarkNet(b *testing.B) {
	k, err := debkernel.Get()
	if err != nil {
		b.Fatal(err)
	}
	mods, err := k.Modules(netModules...)
	if err != nil {
		b.Fatal(err)
	}
	initrd := filepath.Join(b.TempDir(), "guest.cpio")
	if err := initramfs.WriteGuest(initrd, kvmhost.Asset("guestnet"), mods); err != nil {
		b.Fatal(err)
	}
	makeBenchTap(b)
	g := guestSpec{kernel: k.Vmlinuz, initrd: initrd, tap: benchTap,
		cmdline: fmt.Sprintf("%s gvmm.ip=%s/24 gvmm.host=%s", cmdline, benchGuestIP, benchHostIP)}
	want := vsockwire.PatternSum(vsockBytes) // outside the timed transfers
	dial := func(port uint32) (net.Conn, error) {
		return net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", benchGuestIP, port), time.Minute)
	}
	var tr *measure.Tracing
	_, amdErr := os.Stat("/sys/module/kvm_amd")
	isSVM := amdErr == nil
	countMode := os.Getenv("GVMM_BENCH_NET_COUNT")
	if countMode != "" {
		t, err := measure.FindTracing()
		if err != nil {
			b.Fatal(err)
		}
		tr = &t
	}
	hists := []measure.Hist{syscallHist, msiHist, exitHist}
	if countMode == "exits" {
		// The exits and interrupts alone: tracing every system call
		// slows each one.
		hists = hists[1:]
	}
	runs := []vmm{gvmm, qemu, qemuVhost}
	if tr != nil {
		runs = vmms // the counts compare the two userspace data paths
	}
	s := samples{}
	n := rounds("GVMM_BENCH_NET_ROUNDS", 2)
	for range n {
		for _, v := range runs {
			r := start(b, v, g)
			r.waitReport(b, "ready")
			for _, t := range []struct {
				dir string
				fn  func() error
			}{
				{"host to guest", func() error { return toSink(dial, want) }},
				{"guest to host", func() error { return fromSource(dial, want) }},
			} {
				tapBefore, threadsBefore, kvmBefore := tapStats(b), r.threads(b), kvmStats(b)
				var wall time.Duration
				var cpu measure.CPU
				counted := countIf(b, tr, hists, func() {
					before, t0 := r.cpu(b), time.Now()
					if err := t.fn(); err != nil {
						b.Fatalf("%s: %s: %v", v.name, t.dir, err)
					}
					wall, cpu = time.Since(t0), r.cpu(b).Sub(before)
				})
				tapAfter, threadsAfter, kvmAfter := tapStats(b), r.threads(b), kvmStats(b)
				rate := float64(vsockBytes) / (1 << 20) / wall.Seconds()
				name, metric := v.name, t.dir
				if v.name == qemuVhost.name {
					// Its own rows, with gvmm's figures as their gvmm column.
					name, metric = qemu.name, t.dir+" vs vhost=on"
				} else if v.name == gvmm.name {
					s.add(t.dir+" vs vhost=on", gvmm.name, rate)
				}
				s.add(metric, name, rate)
				if v.name != qemuVhost.name {
					s.add(t.dir+", VMM outside guest mode", v.name, cpu.Host().Seconds())
					s.add(t.dir+", guest mode", v.name, cpu.Guest.Seconds())
					var vcpus, others time.Duration
					for tid, after := range threadsAfter {
						d := after.cpu.Sub(threadsBefore[tid].cpu)
						if after.cpu.Guest > 0 {
							vcpus += d.Host()
						} else {
							others += d.Host()
						}
					}
					all, onVCPUs := switches(threadsBefore, threadsAfter)
					s.add(t.dir+", VMM context switches", v.name, float64(all))
					s.add(t.dir+", VMM context switches: vCPU threads", v.name, float64(onVCPUs))
					s.add(t.dir+", VMM outside guest mode: vCPU threads", v.name, vcpus.Seconds())
					s.add(t.dir+", VMM outside guest mode: other threads", v.name, others.Seconds())
					// The data's direction: the TAP transmits toward the VMM.
					frames := tapAfter.TxPackets - tapBefore.TxPackets
					if t.dir == "guest to host" {
						frames = tapAfter.RxPackets - tapBefore.RxPackets
					}
					s.add(t.dir+", TAP frames", v.name, float64(frames))
					s.add(t.dir+", data per TAP frame", v.name, float64(vsockBytes)/1024/float64(max(frames, 1)))
					kvm := kvmAfter.Sub(kvmBefore)
					for _, k := range kvmStatKeys {
						s.add(t.dir+", KVM "+k.name, v.name, k.value(kvm))
					}
					if counted != nil {
						addCounted(b, s, t.dir, isSVM, r, counted)
					}
					// Each run on its own: its medians would hide a run
					// that fell into a slow mode.
					b.Logf("%s, %s: %.2f MiB/s; VMM outside guest mode %.2f s (vCPU threads %.2f, others %.2f), guest mode %.2f s; switches %d (vCPU threads %d; busiest threads %s); KVM %s; exits %s",
						v.name, t.dir, rate, cpu.Host().Seconds(), vcpus.Seconds(), others.Seconds(), cpu.Guest.Seconds(),
						all, onVCPUs, busiest(threadsBefore, threadsAfter, r.cmd.Process.Pid), kvmSummary(kvm), exitSummary(counted, isSVM))
				}
			}
			r.cancel()
			<-r.done
		}
	}
	for _, dir := range []string{"host to guest", "guest to host"} {
		emit(b, s, dir, "MiB/s", &atLeast1)
		emit(b, s, dir+" vs vhost=on", "MiB/s", nil)
		emit(b, s, dir+", VMM outside guest mode", "CPU s", nil)
		emit(b, s, dir+", VMM outside guest mode: vCPU threads", "CPU s", nil)
		emit(b, s, dir+", VMM outside guest mode: other threads", "CPU s", nil)
		emit(b, s, dir+", guest mode", "CPU s", nil)
		emit(b, s, dir+", VMM context switches", "switches", nil)
		emit(b, s, dir+", VMM context switches: vCPU threads", "switches", nil)
		emit(b, s, dir+", TAP frames", "frames", nil)
		emit(b, s, dir+", data per TAP frame", "KiB", nil)
		for _, k := range kvmStatKeys {
			emit(b, s, dir+", KVM "+k.name, k.unit, nil)
		}
		if tr != nil {
			pad(s, dir+", syscall ", n)
			pad(s, dir+", exit ", n)
			emit(b, s, dir+", guest interrupts", "MSIs", nil)
			emit(b, s, dir+", VM exits", "exits", nil)
			exits := measure.Median(s[dir+", VM exits"][qemu.name])
			for _, m := range top(s, dir+", exit ", exits, 0.02) {
				emit(b, s, m, "exits", nil)
			}
			if countMode == "exits" {
				continue // no system calls traced
			}
			emit(b, s, dir+", VMM system calls", "calls", nil)
			total := measure.Median(s[dir+", VMM system calls"][qemu.name])
			for _, m := range top(s, dir+", syscall ", total, 0.02) {
				emit(b, s, m, "calls", nil)
			}
		}
	}
}

// threadUse is one thread's CPU time and context switches so far.
type threadUse struct {
	cpu      measure.CPU
	switches uint64 // voluntary and involuntary
}

// threads reads the use of each of the VMM's threads by id; the threads
// that ever ran in guest mode are its vCPUs.
func (r *running) threads(b *testing.B) map[string]threadUse {
	b.Helper()
	dir := fmt.Sprintf("/proc/%d/task", r.cmd.Process.Pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	use := map[string]threadUse{}
	for _, t := range tasks {
		stat, err := os.ReadFile(filepath.Join(dir, t.Name(), "stat"))
		if err != nil {
			continue // the thread ended
		}
		status, err := os.ReadFile(filepath.Join(dir, t.Name(), "status"))
		if err != nil {
			continue
		}
		var u threadUse
		if u.cpu, err = measure.ParseStat(string(stat)); err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			k, v, _ := strings.Cut(line, ":")
			if k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches" {
				n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if err != nil {
					b.Fatalf("%s/status: %s: %v", t.Name(), line, err)
				}
				u.switches += n
			}
		}
		use[t.Name()] = u
	}
	return use
}

// switches counts the context switches between two readings of the
// threads, all and those of vCPU threads; a thread that ended in between
// is not counted.
func switches(before, after map[string]threadUse) (all, vcpus uint64) {
	for tid, a := range after {
		n := a.switches - before[tid].switches
		all += n
		if a.cpu.Guest > 0 {
			vcpus += n
		}
	}
	return all, vcpus
}

// busiest names the threads that switched most between two readings, as
// "id-offset:switches/CPU ms outside guest mode" with the thread id less
// the process's (the Go runtime's sysmon is usually +1), vCPU threads
// marked with a "v".
func busiest(before, after map[string]threadUse, pid int) string {
	type use struct {
		name     string
		switches uint64
		host     time.Duration
	}
	var all []use
	for tid, a := range after {
		b := before[tid]
		n, _ := strconv.Atoi(tid)
		name := "+" + strconv.Itoa(n-pid)
		if a.cpu.Guest > 0 {
			name += "v"
		}
		all = append(all, use{name, a.switches - b.switches, a.cpu.Sub(b.cpu).Host()})
	}
	slices.SortFunc(all, func(x, y use) int { return cmp.Compare(y.switches, x.switches) })
	parts := make([]string, 0, 6)
	for _, u := range all[:min(6, len(all))] {
		parts = append(parts, fmt.Sprintf("%s:%d/%d", u.name, u.switches, u.host.Milliseconds()))
	}
	return strings.Join(parts, " ")
}

// tapStats reads benchTap's counters.
func tapStats(b *testing.B) netlink.LinkStatistics {
	b.Helper()
	l, err := netlink.LinkByName(benchTap)
	if err != nil {
		b.Fatal(err)
	}
	st := l.Attrs().Statistics
	if st == nil {
		b.Fatalf("TAP %s: no statistics", benchTap)
	}
	return *st
}

// countIf runs fn, counting hists around it when tr is set.
func countIf(b *testing.B, tr *measure.Tracing, hists []measure.Hist, fn func()) map[string]measure.Counts {
	b.Helper()
	if tr == nil {
		fn()
		return nil
	}
	return count(b, *tr, hists, fn)
}

// kvmStats reads the host kernel's KVM statistics: with one VM running,
// its own.
func kvmStats(b *testing.B) measure.Counts {
	b.Helper()
	c, err := measure.ReadKVMStats(measure.KVMStatsDir)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// kvmStatKeys are the KVM statistics a transfer reports: the exits by
// kind, and where the vCPU threads' time in the kernel goes while the
// guest idles (halt polling spins on the CPU, halt_wait_ns sleeps).
var kvmStatKeys = []struct {
	name, unit string
	value      func(measure.Counts) float64
}{
	{"exits", "exits", kvmStat("exits")},
	{"halt exits", "exits", kvmStat("halt_exits")},
	{"MMIO exits to the VMM", "exits", kvmStat("mmio_exits")},
	{"port I/O exits to the VMM", "exits", kvmStat("io_exits")},
	{"IRQ window exits", "exits", kvmStat("irq_window_exits")},
	{"interrupts injected", "IRQs", kvmStat("irq_injections")},
	{"halt polls attempted", "polls", kvmStat("halt_attempted_poll")},
	{"halt polls successful", "polls", kvmStat("halt_successful_poll")},
	{"halt polling", "CPU s", func(c measure.Counts) float64 {
		return float64(c["halt_poll_success_ns"]+c["halt_poll_fail_ns"]) / 1e9
	}},
	{"halted, asleep", "s", func(c measure.Counts) float64 { return float64(c["halt_wait_ns"]) / 1e9 }},
}

func kvmStat(name string) func(measure.Counts) float64 {
	return func(c measure.Counts) float64 { return float64(c[name]) }
}

// kvmSummary is every non-zero KVM statistic of a transfer, for its log
// line.
func kvmSummary(c measure.Counts) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		if c[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
		}
	}
	return strings.Join(parts, " ")
}

// exitSummary names a transfer's counted exits by reason, most first.
func exitSummary(counted map[string]measure.Counts, svm bool) string {
	exits := counted[exitHist.Event]
	if exits == nil {
		return "not counted"
	}
	keys := slices.SortedFunc(maps.Keys(exits), func(a, b string) int { return cmp.Compare(exits[b], exits[a]) })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		code, _ := strconv.ParseUint(k, 10, 64)
		parts = append(parts, fmt.Sprintf("%s=%d", measure.ExitName(svm, code), exits[k]))
	}
	return strings.Join(parts, " ")
}

// addCounted adds the MSIs and the system calls of r's threads.
func addCounted(b *testing.B, s samples, dir string, svm bool, r *running, c map[string]measure.Counts) {
	b.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", r.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	mine := map[string]bool{}
	for _, t := range tasks {
		mine[t.Name()] = true
	}
	s.add(dir+", guest interrupts", r.vmm.name, float64(c[msiHist.Event].Total()))
	s.add(dir+", VM exits", r.vmm.name, float64(c[exitHist.Event].Total()))
	s.addCounts(dir+", exit ", r.vmm.name, c[exitHist.Event], func(k string) string {
		code, _ := strconv.ParseUint(k, 10, 64)
		return measure.ExitName(svm, code)
	})
	calls := measure.Counts{}
	for k, n := range c[syscallHist.Event] {
		tid, id, _ := strings.Cut(k, ",")
		if mine[tid] {
			calls[id] += n
		}
	}
	s.add(dir+", VMM system calls", r.vmm.name, float64(calls.Total()))
	s.addCounts(dir+", syscall ", r.vmm.name, calls, func(id string) string {
		if n, ok := syscallNames[id]; ok {
			return n
		}
		return "#" + id
	})
}

// makeBenchTap makes the persistent TAP every VMM attaches to in turn,
// with the host's address.
func makeBenchTap(b *testing.B) {
	b.Helper()
	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: benchTap},
		Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE}
	if err := netlink.LinkAdd(tap); err != nil {
		b.Fatalf("TAP %s: %v", benchTap, err)
	}
	for _, f := range tap.Fds {
		f.Close()
	}
	b.Cleanup(func() { _ = netlink.LinkDel(tap) })
	addr, err := netlink.ParseAddr(benchHostIP + "/24")
	if err != nil {
		b.Fatal(err)
	}
	if err := netlink.AddrAdd(tap, addr); err != nil {
		b.Fatal(err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		b.Fatal(err)
	}
}
