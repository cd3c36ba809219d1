// Package balloon_test boots the stock Debian kernel with gvmm and checks
// end to end how guest memory goes back to the host and how the control
// socket drives a machine: the guest's own virtio_balloon driver inflating
// and deflating the balloon and reporting free pages, its memory
// statistics, pause and resume, the ACPI power button, KSM sharing
// between guests, the vCPU over-commit rule and the API's answers to bad
// requests. The guest's init is tests/guestmem; the VMM's resident memory
// is read from /proc/PID/status of the gvmm process each test starts.
package balloon_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// guestModules are what the guest loads, dependencies resolved by
// debkernel: the PCI transport and the balloon driver, the ACPI button
// driver and evdev, through which init sees the power button.
var guestModules = []string{"virtio_pci", "virtio_balloon", "button", "evdev"}

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestmem", "github.com/gvmm-dev/gvmm/tests/guestmem"),
		kvmhost.WithModules(guestModules...),
	)
}

const (
	// runTimeout bounds one gvmm run; bootTimeout the wait for its guest
	// to take commands (boots take 20-40 s in the KVM test host, longer
	// when several guests boot at once).
	runTimeout  = 6 * time.Minute
	bootTimeout = 3 * time.Minute
	// allocTimeout bounds touching a few hundred MiB in the guest.
	allocTimeout = 2 * time.Minute
	apiTimeout   = 10 * time.Second
	// exitTimeout bounds a guest's power-off once asked.
	exitTimeout = time.Minute
	ksmDir      = "/sys/kernel/mm/ksm/"
)

// TestBalloonInflateReturnsMemory has a 512 MiB guest touch and free 400
// MiB, inflates the balloon to 384 MiB through the control socket and
// expects the VMM's resident memory to fall by 300 MiB from its peak
// within 10 s, with the guest reporting 384 MiB given; deflated again,
// the guest can use 400 MiB once more.
func TestBalloonInflateReturnsMemory(t *testing.T) {
	const (
		touchMiB   = 400
		balloonMiB = 384
		minDropMiB = 300
		inflateBy  = 10 * time.Second
		deflateBy  = 30 * time.Second
	)
	v := start(t, "guest", guestInitrd(t), machineSpec{cpus: 1, memory: "512M", extra: []string{"--balloon"}, api: true})
	v.ready(t)
	require.Equal(t, "bound", v.one(t, "balloon"), "the guest's virtio_balloon driver took the device\n%s", v.output())

	before := v.rssMiB(t)
	require.Equal(t, "ok", v.command(t, fmt.Sprintf("alloc %d", touchMiB), "alloc", allocTimeout), v.output())
	peak := v.rssMiB(t)
	t.Logf("gvmm RSS: %.0f MiB after boot, %.0f MiB with %d MiB touched", before, peak, touchMiB)
	require.GreaterOrEqual(t, peak-before, float64(touchMiB)*0.9, "the guest's writes are backed by the VMM's memory")
	v.command(t, "free", "freed", apiTimeout)

	status, stdout, stderr := v.ctl(t, "balloon", fmt.Sprintf("%dM", balloonMiB))
	require.Equal(t, 0, status, "gvmm ctl balloon: %s%s", stdout, stderr)
	asked := time.Now()
	var (
		rss  float64
		info api.Info
	)
	for {
		rss, info = v.rssMiB(t), v.info(t)
		require.NotNil(t, info.Balloon, "GET /vm shows the balloon")
		if peak-rss >= minDropMiB && info.Balloon.ActualMiB == balloonMiB {
			break
		}
		require.True(t, time.Since(asked) < inflateBy,
			"%s after asking for %d MiB: RSS %.0f MiB (peak %.0f), balloon %+v\n%s",
			inflateBy, balloonMiB, rss, peak, *info.Balloon, v.output())
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("inflated to %d MiB in %s: RSS %.0f MiB, %.0f MiB below the peak", balloonMiB,
		time.Since(asked).Round(10*time.Millisecond), rss, peak-rss)
	assert.Equal(t, uint64(balloonMiB), info.Balloon.RequestedMiB)
	assert.Equal(t, api.StateRunning, info.State)
	// The ballooned pages are gone from the guest's free memory.
	mi := parseMeminfo(t, v.command(t, "meminfo", "meminfo", apiTimeout))
	assert.Less(t, mi["free_kb"], uint64(512-balloonMiB)*1024, "MemFree with %d MiB in the balloon", balloonMiB)

	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	require.NoError(t, v.client.SetBalloon(ctx, 0))
	asked = time.Now()
	for info = v.info(t); info.Balloon.ActualMiB != 0; info = v.info(t) {
		require.True(t, time.Since(asked) < deflateBy, "balloon still %+v %s after deflating\n%s", *info.Balloon, deflateBy, v.output())
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("deflated in %s", time.Since(asked).Round(10*time.Millisecond))
	assert.Equal(t, "ok", v.command(t, fmt.Sprintf("alloc %d", touchMiB), "alloc", allocTimeout), "the memory is the guest's again")
	t.Logf("gvmm RSS %.0f MiB with %d MiB touched again", v.rssMiB(t), touchMiB)
	v.quit(t)
}

// TestFreePageReportingReturnsMemory leaves the balloon empty: only the
// guest's free page reports give the memory of a 300 MiB allocation back
// once freed.
func TestFreePageReportingReturnsMemory(t *testing.T) {
	const (
		touchMiB   = 300
		minDropMiB = 200
		within     = 30 * time.Second
	)
	v := start(t, "guest", guestInitrd(t), machineSpec{cpus: 1, memory: "512M", extra: []string{"--balloon"}, api: true})
	v.ready(t)
	v.requireTimer(t)
	require.Equal(t, "bound", v.one(t, "balloon"), v.output())

	require.Equal(t, "ok", v.command(t, fmt.Sprintf("alloc %d", touchMiB), "alloc", allocTimeout), v.output())
	peak := v.rssMiB(t)
	v.command(t, "free", "freed", apiTimeout)
	freed := time.Now()
	rss := peak
	for ; peak-rss < minDropMiB; rss = v.rssMiB(t) {
		require.True(t, time.Since(freed) < within, "RSS %.0f MiB %s after the guest freed %d MiB (peak %.0f)\n%s",
			rss, within, touchMiB, peak, v.output())
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("RSS fell from %.0f to %.0f MiB in %s", peak, rss, time.Since(freed).Round(10*time.Millisecond))
	info := v.info(t)
	require.NotNil(t, info.Balloon)
	assert.Equal(t, api.BalloonInfo{}, *info.Balloon, "the balloon was never inflated: the reports did it")
	v.quit(t)
}

// TestControlSocket drives one 1 GiB guest through the control socket:
// its memory statistics, bad requests, pause and resume, and shutdown by
// the ACPI power button.
func TestControlSocket(t *testing.T) {
	const memMiB = 1024
	v := start(t, "guest", guestInitrd(t), machineSpec{cpus: 1, memory: fmt.Sprint(memMiB), extra: []string{"--balloon"}, api: true})
	v.ready(t)
	v.requireTimer(t)
	require.Equal(t, "bound", v.one(t, "balloon"), v.output())
	require.Contains(t, v.one(t, "inputs"), "Power Button", "the guest's ACPI button driver found the power button")

	t.Run("info", func(t *testing.T) {
		status, stdout, stderr := v.ctl(t, "info")
		require.Equal(t, 0, status, stderr)
		var info api.Info
		decodeJSON(t, []byte(stdout), &info)
		assert.Equal(t, api.StateRunning, info.State)
		assert.Equal(t, 1, info.VCPUs)
		assert.Equal(t, uint64(memMiB), info.MemoryMiB)
		assert.Equal(t, &api.BalloonInfo{}, info.Balloon)
		assert.Greater(t, info.UptimeSeconds, 0.0)
	})

	t.Run("statistics", func(t *testing.T) {
		memTotal := parseMeminfo(t, v.command(t, "meminfo", "meminfo", apiTimeout))["total_kb"]
		var s api.BalloonStats
		deadline := time.Now().Add(10 * time.Second)
		for {
			status, stdout, stderr := v.ctl(t, "balloon-stats")
			require.Equal(t, 0, status, stderr)
			s = api.BalloonStats{}
			decodeJSON(t, []byte(stdout), &s)
			if s.Stats["free_memory"] > 0 {
				break
			}
			require.True(t, time.Now().Before(deadline), "no statistics from the guest: %s\n%s", stdout, v.output())
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("statistics: %v, host RSS %d MiB", s.Stats, s.HostRSSBytes>>20)
		total := s.Stats["total_memory"]
		assert.InDelta(t, memMiB<<20, total, memMiB<<20/10, "total_memory within 10%% of the guest's RAM")
		assert.Equal(t, memTotal*1024, total, "total_memory is the guest's MemTotal")
		assert.Less(t, s.Stats["free_memory"], total)
		assert.Greater(t, s.Stats["available_memory"], uint64(0))
		assert.False(t, s.UpdatedAt.IsZero(), "the statistics' time")
		rss := v.rssMiB(t)
		assert.InDelta(t, rss, float64(s.HostRSSBytes)/(1<<20), 32, "host_rss_bytes is gvmm's VmRSS")
	})

	t.Run("bad requests", func(t *testing.T) {
		huge := append([]byte(`{"size_mib": 1, "pad": "`), bytes.Repeat([]byte("x"), 1<<20)...)
		huge = append(huge, `"}`...)
		for _, tc := range []struct {
			name   string
			method string
			path   string
			body   string
			status int
			msg    string
		}{
			{"invalid JSON", "PUT", "/vm/balloon", `{"size_mib": 12`, 400, "not valid JSON"},
			{"not an object", "PUT", "/vm/balloon", `[256]`, 400, "JSON object"},
			{"unknown field", "PUT", "/vm/balloon", `{"size_mib": 1, "sizeMiB": 2}`, 400, `unknown field "sizeMiB"`},
			{"negative size", "PUT", "/vm/balloon", `{"size_mib": -1}`, 400, "negative"},
			{"fractional size", "PUT", "/vm/balloon", `{"size_mib": 1.5}`, 400, "whole number"},
			{"larger than RAM", "PUT", "/vm/balloon", `{"size_mib": 1025}`, 400, "larger than the guest's memory"},
			{"unknown path", "GET", "/vm/baloon", ``, 404, "/vm/baloon"},
			{"wrong method", "DELETE", "/vm", ``, 405, "method not allowed"},
			{"1 MiB body", "PUT", "/vm/balloon", string(huge), 413, "larger than"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := v.rawRequest(t, tc.method, tc.path, []byte(tc.body))
				assert.Equal(t, tc.status, r.status, "%s", r.body)
				assert.Equal(t, "application/json", r.contentType)
				var e struct {
					Error string `json:"error"`
				}
				decodeJSON(t, r.body, &e)
				assert.Contains(t, e.Error, tc.msg)
			})
		}
		info := v.info(t)
		assert.Equal(t, api.StateRunning, info.State, "the machine runs on")
		assert.Equal(t, &api.BalloonInfo{}, info.Balloon, "no bad request changed the balloon")
	})

	t.Run("pause and resume", func(t *testing.T) {
		const quiet = 2 * time.Second
		v.send(t, "ticks")
		v.waitFor(t, "tick", 30*time.Second, count(2))
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		require.NoError(t, v.client.Pause(ctx))
		assert.Equal(t, api.StatePaused, v.info(t).State)
		// Let output already written by the paused guest reach us.
		time.Sleep(200 * time.Millisecond)
		n := len(v.out.values("tick"))
		time.Sleep(quiet)
		assert.Len(t, v.out.values("tick"), n, "ticks while paused")
		conflict := v.client.Pause(ctx)
		var apiErr *api.Error
		if assert.ErrorAs(t, conflict, &apiErr, "pausing twice") {
			assert.Equal(t, 409, apiErr.StatusCode)
		}

		require.NoError(t, v.client.Resume(ctx))
		resumed := time.Now()
		assert.Equal(t, api.StateRunning, v.info(t).State)
		v.waitFor(t, "tick", 10*time.Second, count(n+2))
		t.Logf("paused at tick %d; ticks again %s after resuming", n, time.Since(resumed).Round(10*time.Millisecond))
	})

	t.Run("shutdown", func(t *testing.T) {
		status, stdout, stderr := v.ctl(t, "shutdown")
		require.Equal(t, 0, status, "gvmm ctl shutdown: %s%s", stdout, stderr)
		pressed := time.Now()
		require.Equal(t, 0, v.exit(t, exitTimeout), "gvmm's exit status after the power button\n%s", v.output())
		t.Logf("powered off %s after the button", time.Since(pressed).Round(10*time.Millisecond))
		assert.Equal(t, []string{"1"}, v.out.values("powerbutton"), "the guest saw the power button")
		assert.Contains(t, v.errb.String(), "powered off")
	})
}

// TestKSMMergesGuests runs two guests marked --mergeable side by side,
// from the same kernel and initramfs, and a third without, and expects
// the host's KSM to merge pages of the first two only.
func TestKSMMergesGuests(t *testing.T) {
	const within = 90 * time.Second
	saved := map[string]uint64{}
	for _, name := range []string{"run", "sleep_millisecs", "pages_to_scan"} {
		saved[name] = ksm(t, name)
	}
	t.Cleanup(func() {
		for _, name := range []string{"run", "sleep_millisecs", "pages_to_scan"} {
			setKSM(t, name, saved[name])
		}
	})
	setKSM(t, "sleep_millisecs", 20)
	setKSM(t, "pages_to_scan", 4000)
	setKSM(t, "run", 1)
	baseline := ksm(t, "pages_sharing")

	initrd := guestInitrd(t)
	var vms []*vmm
	for _, name := range []string{"mergeable-1", "mergeable-2", "unmarked"} {
		var extra []string
		if name != "unmarked" {
			extra = append(extra, "--mergeable")
		}
		vms = append(vms, start(t, name, initrd, machineSpec{cpus: 1, memory: "256M", extra: extra}))
	}
	for _, v := range vms {
		v.ready(t)
	}
	readyAt := time.Now()
	var sharing, merged1, merged2 uint64
	for {
		sharing = ksm(t, "pages_sharing")
		merged1, merged2 = ksmMergingPages(t, vms[0].pid()), ksmMergingPages(t, vms[1].pid())
		if sharing > baseline && merged1 > 0 && merged2 > 0 {
			break
		}
		require.True(t, time.Since(readyAt) < within, "%s after the guests were ready: pages_sharing %d (before %d), merging pages %d and %d, full scans %d",
			within, sharing, baseline, merged1, merged2, ksm(t, "full_scans"))
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("after %s: pages_sharing %d, pages_shared %d, merging pages %d and %d, full scans %d",
		time.Since(readyAt).Round(100*time.Millisecond), sharing, ksm(t, "pages_shared"), merged1, merged2, ksm(t, "full_scans"))
	assert.Zero(t, ksmMergingPages(t, vms[2].pid()), "the guest without --mergeable has no merged pages")
	for _, v := range vms {
		v.quit(t)
	}
}

// TestCPUOvercommit checks the rule on vCPUs: one guest may not have more
// than the host's logical CPUs unless allowed, while many single-vCPU
// guests may together.
func TestCPUOvercommit(t *testing.T) {
	host := runtime.NumCPU()
	initrd := guestInitrd(t)

	t.Run("refused", func(t *testing.T) {
		v := start(t, "refused", initrd, machineSpec{cpus: host + 1, memory: "256M"})
		require.Equal(t, 2, v.exit(t, apiTimeout), v.output())
		assert.Contains(t, v.errb.String(), "logical CPUs")
		assert.Contains(t, v.errb.String(), "allow")
		assert.Empty(t, v.out.String(), "no guest ran")
	})

	t.Run("allowed", func(t *testing.T) {
		v := start(t, "overcommitted", initrd, machineSpec{cpus: host + 1, memory: "256M", extra: []string{"--allow-cpu-overcommit"}})
		v.ready(t)
		assert.Equal(t, strconv.Itoa(host+1), v.one(t, "nproc"))
		v.quit(t)
		warned := false
		for _, line := range strings.Split(v.errb.String(), "\n") {
			warned = warned || strings.Contains(line, "level=WARN") && strings.Contains(line, "vcpus="+strconv.Itoa(host+1))
		}
		assert.True(t, warned, "a warning names the over-commit:\n%s", v.errb.String())
	})

	t.Run("single-vCPU guests side by side", func(t *testing.T) {
		const guests = 4
		begin := time.Now()
		vms := make([]*vmm, guests)
		for i := range vms {
			vms[i] = start(t, fmt.Sprintf("guest-%d", i+1), initrd, machineSpec{cpus: 1, memory: "256M"})
		}
		errs := make([]error, guests)
		var wg sync.WaitGroup
		for i, v := range vms {
			wg.Go(func() { _, errs[i] = v.await("ready", bootTimeout, count(1)) })
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		t.Logf("%d guests ready in %s", guests, time.Since(begin).Round(100*time.Millisecond))
		for _, v := range vms {
			assert.Equal(t, "1", v.one(t, "nproc"))
			assert.Empty(t, v.out.values("error"), v.output())
			v.quit(t)
		}
	})
}

// parseMeminfo parses the guest's "total_kb=T free_kb=F available_kb=A".
func parseMeminfo(t *testing.T, s string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, f := range strings.Fields(s) {
		k, val, ok := strings.Cut(f, "=")
		require.True(t, ok, "meminfo %q", s)
		n, err := strconv.ParseUint(val, 10, 64)
		require.NoError(t, err, "meminfo %q", s)
		out[k] = n
	}
	return out
}
