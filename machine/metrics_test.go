package machine

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/kvm"
)

func TestParseThreadTimes(t *testing.T) {
	// Fields 14 (utime), 15 (stime) and 43 (guest_time) are 300, 40, 250.
	fields := func(comm string) string {
		f := make([]string, 52)
		for i := range f {
			f[i] = "0"
		}
		f[0], f[1], f[2] = "1234", comm, "R"
		f[13], f[14], f[42] = "300", "40", "250"
		return strings.Join(f, " ") + "\n"
	}
	tests := []struct {
		name, stat string
		want       threadTimes
		wantErr    string
	}{
		{"plain", fields("(gvmm)"), threadTimes{user: 50, system: 40, guest: 250}, ""},
		{"name with spaces and parentheses", fields("(a) b (c)"), threadTimes{user: 50, system: 40, guest: 250}, ""},
		{"short", "1 (gvmm) R 1 2 3", threadTimes{}, "fields"},
		{"no name", "1 gvmm R", threadTimes{}, "no command name"},
		{"not a number", strings.Replace(fields("(gvmm)"), " 300 ", " x ", 1), threadTimes{}, "field 14"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseThreadTimes([]byte(tt.stat))
			if tt.wantErr != "" {
				assert.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseRollup(t *testing.T) {
	rss, pss, err := parseRollup(strings.NewReader("55d0-7ffd ---p 00000000 00:00 0    [rollup]\nRss:  2048 kB\nPss:  1024 kB\nPss_Anon: 512 kB\n"))
	require.NoError(t, err)
	assert.Equal(t, uint64(2<<20), rss)
	assert.Equal(t, uint64(1<<20), pss)
	_, _, err = parseRollup(strings.NewReader("Rss: 1 kB\n"))
	assert.ErrorContains(t, err, "no Rss and Pss")
	_, _, err = parseRollup(strings.NewReader("Rss: x kB\nPss: 1 kB\n"))
	assert.ErrorContains(t, err, "smaps_rollup Rss")

	rss, pss, err = memoryUsage()
	require.NoError(t, err, "this process's own")
	assert.Positive(t, rss)
	assert.Positive(t, pss)
}

// TestVCPUTimeSpansThreads: a vCPU's time is its threads' while bound to
// it, carried across threads as across reboots.
func TestVCPUTimeSpansThreads(t *testing.T) {
	var s vcpuStats
	burn := func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		s.bindThread(unix.Gettid())
		defer s.unbindThread()
		// 100 ms of this thread's CPU time, however busy the host.
		var start, now unix.Timespec
		require.NoError(t, unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &start))
		for now.Nano()-start.Nano() < int64(100*time.Millisecond) {
			require.NoError(t, unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &now))
		}
	}
	burn()
	first := s.times()
	assert.GreaterOrEqual(t, first.user+first.system, uint64(5), "about 10 ticks of 10 ms: %+v", first)
	assert.Zero(t, first.guest, "no guest here")
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, first, s.times(), "no thread bound: the total stays")
	burn()
	second := s.times()
	assert.GreaterOrEqual(t, second.user+second.system, first.user+first.system+5, "%+v then %+v", first, second)
}

func TestCollector(t *testing.T) {
	m := &Machine{cfg: Config{CPUs: 2, Memory: 256 * MiB}, vcpuStats: make([]vcpuStats, 2)}
	m.vcpuStats[0].countExit(kvm.ExitIO)
	m.vcpuStats[0].countExit(kvm.ExitIO)
	m.vcpuStats[1].countExit(kvm.ExitMMIO)
	m.vcpuStats[1].countExit(kvm.ExitReason(1000))
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(m.Collector()))
	fams, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			got[key(f.GetName(), mt)] = mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
		}
	}
	for k, want := range map[string]float64{
		`gvmm_vcpu_exits_total{reason="io",vcpu="0"}`:    2,
		`gvmm_vcpu_exits_total{reason="mmio",vcpu="1"}`:  1,
		`gvmm_vcpu_exits_total{reason="other",vcpu="1"}`: 1,
		`gvmm_vcpus`:              2,
		`gvmm_guest_memory_bytes`: 256 << 20,
		`gvmm_uptime_seconds`:     0,
		`gvmm_vcpu_seconds_total{mode="guest",vcpu="1"}`: 0,
	} {
		v, ok := got[k]
		if assert.True(t, ok, "%s in %v", k, got) {
			assert.Equal(t, want, v, k)
		}
	}
	assert.NotContains(t, got, `gvmm_vcpu_exits_total{reason="hlt",vcpu="0"}`, "reasons never seen are left out")
	for _, k := range []string{`gvmm_vmm_rss_bytes`, `gvmm_vmm_pss_bytes`, `gvmm_vmm_cpu_seconds_total{mode="user"}`} {
		assert.Positive(t, got[k], k)
	}
	for k := range got {
		assert.False(t, strings.HasPrefix(k, "gvmm_io_exits_total"), "no bus before a boot: %s", k)
	}
}

func key(name string, m *dto.Metric) string {
	var ls []string
	for _, l := range m.GetLabel() {
		ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
	}
	if len(ls) == 0 {
		return name
	}
	return name + "{" + strings.Join(ls, ",") + "}"
}
