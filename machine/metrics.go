package machine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/internal/metrics"
	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/virtio"
)

// maxExitReason bounds the exit reasons counted one by one; KVM's are
// below 64, and anything past the last slot is counted there.
const maxExitReason = 64

// vcpuStats is what one vCPU id counts over the machine's life: a reboot
// makes new vCPU threads, which carry on its counts.
type vcpuStats struct {
	exits [maxExitReason]atomic.Uint64 // by kvm.ExitReason

	// Thread CPU time, which the kernel's scheduler accounts at no cost
	// to the exit path: done is the time of the threads that ended, and
	// start the current thread's time when it became this vCPU's (the
	// Go runtime may have run other goroutines on it before).
	mu    sync.Mutex
	tid   int
	start threadTimes
	done  threadTimes
}

// countExit counts one exit: an atomic add on the vCPU's own counters.
func (s *vcpuStats) countExit(r kvm.ExitReason) {
	s.exits[min(uint32(r), maxExitReason-1)].Add(1)
}

// threadTimes is a thread's CPU time in clock ticks.
type threadTimes struct{ user, system, guest uint64 }

func (t threadTimes) sub(u threadTimes) threadTimes {
	return threadTimes{t.user - u.user, t.system - u.system, t.guest - u.guest}
}

func (t threadTimes) add(u threadTimes) threadTimes {
	return threadTimes{t.user + u.user, t.system + u.system, t.guest + u.guest}
}

// clockTick is USER_HZ, the unit of /proc's times: 100 on every Linux
// architecture gvmm runs on.
const clockTick = 100

// bindThread makes the calling thread tid the vCPU's.
func (s *vcpuStats) bindThread(tid int) {
	t, _ := readTimes(threadStat(tid)) // a failure counts from zero
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tid, s.start = tid, t
}

// unbindThread adds the thread's time as the vCPU's to the total.
func (s *vcpuStats) unbindThread() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, err := readTimes(threadStat(s.tid)); err == nil {
		s.done = s.done.add(t.sub(s.start))
	}
	s.tid = 0
}

// times returns the vCPU's CPU time so far.
func (s *vcpuStats) times() threadTimes {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tid == 0 {
		return s.done
	}
	t, err := readTimes(threadStat(s.tid))
	if err != nil {
		return s.done
	}
	return s.done.add(t.sub(s.start))
}

// threadStat is the stat file of one of this process's threads.
func threadStat(tid int) string { return fmt.Sprintf("/proc/self/task/%d/stat", tid) }

// readTimes reads utime, stime and guest_time from a stat file of /proc
// (proc_pid_stat(5)). The kernel counts guest time in utime too; the
// result's user is the rest, the time outside the guest.
func readTimes(path string) (threadTimes, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return threadTimes{}, err
	}
	return parseThreadTimes(b)
}

func parseThreadTimes(b []byte) (threadTimes, error) {
	// The command name may hold spaces and parentheses: the fields
	// start after its last ')', with field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return threadTimes{}, errors.New("stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	const utime, stime, guest = 14 - 3, 15 - 3, 43 - 3
	if len(f) <= guest {
		return threadTimes{}, fmt.Errorf("stat: %d fields, want %d", len(f)+2, guest+3)
	}
	var v [3]uint64
	for j, k := range []int{utime, stime, guest} {
		n, err := strconv.ParseUint(f[k], 10, 64)
		if err != nil {
			return threadTimes{}, fmt.Errorf("stat field %d: %w", k+3, err)
		}
		v[j] = n
	}
	return threadTimes{user: v[0] - min(v[0], v[2]), system: v[1], guest: v[2]}, nil
}

// memoryUsage reads the process's resident and proportional set sizes
// from /proc/self/smaps_rollup, in bytes.
func memoryUsage() (rss, pss uint64, err error) {
	f, err := os.Open("/proc/self/smaps_rollup")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	return parseRollup(f)
}

func parseRollup(f io.Reader) (rss, pss uint64, err error) {
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		var dst *uint64
		switch {
		case !ok:
			continue
		case key == "Rss":
			dst = &rss
		case key == "Pss":
			dst = &pss
		default:
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(val), "kB")), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("smaps_rollup %s: %w", key, err)
		}
		*dst = kb << 10
		found++
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if found < 2 {
		return 0, 0, errors.New("smaps_rollup: no Rss and Pss")
	}
	return rss, pss, nil
}

// namedSource is a device's metrics and the name that labels them.
type namedSource struct {
	name string // type and index among its type: block0, vsock0
	typ  virtio.DeviceType
	src  metrics.Source
}

// Collector returns the machine's metrics for a Prometheus registry: VM
// exits, vCPU time, the VMM's memory, and each device's counters. The
// set of metrics depends on the devices and the guest, so the collector
// is unchecked (it describes nothing ahead). Several machines in one
// process need a label each: prometheus.WrapCollectorWith.
func (m *Machine) Collector() prometheus.Collector { return collector{m} }

type collector struct{ m *Machine }

func (collector) Describe(chan<- *prometheus.Desc) {}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.m.collect(&promSink{ch: ch})
}

func (m *Machine) collect(s metrics.Sink) {
	s.Gauge("gvmm_uptime_seconds", "Time since the machine started.", m.Uptime().Seconds())
	s.Gauge("gvmm_guest_memory_bytes", "The guest's configured memory.", float64(m.cfg.Memory))
	s.Gauge("gvmm_vcpus", "The guest's vCPUs.", float64(m.cfg.CPUs))
	for id := range m.vcpuStats {
		v := &m.vcpuStats[id]
		vl := metrics.L("vcpu", strconv.Itoa(id))
		for r := range v.exits {
			if n := v.exits[r].Load(); n > 0 {
				reason := strings.ToLower(kvm.ExitReason(r).String())
				if r == maxExitReason-1 {
					reason = "other"
				}
				s.Counter("gvmm_vcpu_exits_total", "VM exits to the VMM by vCPU and KVM exit reason.", float64(n), vl, metrics.L("reason", reason))
			}
		}
		t := v.times()
		const help = "vCPU thread CPU time by vCPU and mode: guest (in the guest), vmm_user and vmm_system (in the VMM handling exits)."
		s.Counter("gvmm_vcpu_seconds_total", help, float64(t.guest)/clockTick, vl, metrics.L("mode", "guest"))
		s.Counter("gvmm_vcpu_seconds_total", help, float64(t.user)/clockTick, vl, metrics.L("mode", "vmm_user"))
		s.Counter("gvmm_vcpu_seconds_total", help, float64(t.system)/clockTick, vl, metrics.L("mode", "vmm_system"))
	}
	if self, err := readTimes("/proc/self/stat"); err == nil {
		const help = "The VMM process's CPU time by mode (guest time of its vCPUs included)."
		s.Counter("gvmm_vmm_cpu_seconds_total", help, float64(self.user+self.guest)/clockTick, metrics.L("mode", "user"))
		s.Counter("gvmm_vmm_cpu_seconds_total", help, float64(self.system)/clockTick, metrics.L("mode", "system"))
	}
	if rss, pss, err := memoryUsage(); err == nil {
		s.Gauge("gvmm_vmm_rss_bytes", "The VMM process's resident memory, guest RAM it touched included.", float64(rss))
		s.Gauge("gvmm_vmm_pss_bytes", "The VMM process's proportional set size: resident memory with shared pages divided among their sharers.", float64(pss))
	}
	b := m.cur.Load()
	if b == nil {
		return
	}
	for _, bus := range []struct {
		name string
		bus  *devices.Bus
	}{{"pio", b.pio}, {"mmio", b.mmio}} {
		if bus.bus == nil {
			continue
		}
		bus.bus.Exits(func(name string, n uint64) {
			s.Counter("gvmm_io_exits_total", "Port I/O and MMIO exits by bus and device, since the guest's last boot.", float64(n),
				metrics.L("bus", bus.name), metrics.L("device", name))
		})
	}
	for _, d := range b.sources {
		d.src.CollectMetrics(labelled{s, metrics.L("device", d.name)})
	}
	if m.balloon != nil {
		// Fresh guest statistics for the next scrape, without waiting
		// for them in this one; a request still unanswered is left be.
		_ = m.balloon.RequestStats()
	}
}

// labelled adds a label to every value reported through it.
type labelled struct {
	s     metrics.Sink
	label metrics.Label
}

func (l labelled) Counter(name, help string, v float64, labels ...metrics.Label) {
	l.s.Counter(name, help, v, append([]metrics.Label{l.label}, labels...)...)
}

func (l labelled) Gauge(name, help string, v float64, labels ...metrics.Label) {
	l.s.Gauge(name, help, v, append([]metrics.Label{l.label}, labels...)...)
}

func (l labelled) Histogram(name, help string, h metrics.HistogramSnapshot, labels ...metrics.Label) {
	l.s.Histogram(name, help, h, append([]metrics.Label{l.label}, labels...)...)
}

// promSink turns reported values into constant Prometheus metrics.
type promSink struct{ ch chan<- prometheus.Metric }

func (p *promSink) desc(name, help string, labels []metrics.Label) (*prometheus.Desc, []string) {
	names, values := make([]string, len(labels)), make([]string, len(labels))
	for i, l := range labels {
		names[i], values[i] = l.Name, l.Value
	}
	return prometheus.NewDesc(name, help, names, nil), values
}

func (p *promSink) send(m prometheus.Metric, err error, d *prometheus.Desc) {
	if err != nil {
		// The registry reports it and serves the rest.
		m = prometheus.NewInvalidMetric(d, err)
	}
	p.ch <- m
}

func (p *promSink) Counter(name, help string, v float64, labels ...metrics.Label) {
	d, values := p.desc(name, help, labels)
	m, err := prometheus.NewConstMetric(d, prometheus.CounterValue, v, values...)
	p.send(m, err, d)
}

func (p *promSink) Gauge(name, help string, v float64, labels ...metrics.Label) {
	d, values := p.desc(name, help, labels)
	m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, values...)
	p.send(m, err, d)
}

func (p *promSink) Histogram(name, help string, h metrics.HistogramSnapshot, labels ...metrics.Label) {
	d, values := p.desc(name, help, labels)
	m, err := prometheus.NewConstHistogram(d, h.Count, h.SumSeconds, h.Buckets, values...)
	p.send(m, err, d)
}
