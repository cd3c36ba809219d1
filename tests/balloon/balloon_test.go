// Package balloon_test boots the stock Debian kernel with gvmm and checks
// end to end how guest memory goes back to the host and how the control
// socket drives a machine: the guest's own virtio_balloon driver inflating
// and deflating the balloon and reporting free pages, its memory
// statistics, pause and resume, the ACPI power button, KSM sharing
// between guests, the vCPU over-commit rule and the API's answers to bad
// requests. The guest's init is tests/guestmem; the VMM's resident memory
// is read from /proc/PID/status of the gvmm process each test starts, the
// pages KSM merged from its /proc/PID/pagemap.
package balloon_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
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
	// to take commands (boots take 20-40 s in the KVM test host).
	runTimeout  = 6 * time.Minute
	bootTimeout = 3 * time.Minute
	// allocTimeout bounds touching a few hundred MiB in the guest.
	allocTimeout = 2 * time.Minute
	apiTimeout   = 10 * time.Second
	// exitTimeout bounds a guest's power-off once asked.
	exitTimeout = time.Minute
	ksmDir      = "/sys/kernel/mm/ksm/"
	// memMiB is the balloon guest's RAM.
	memMiB = 512
)

// TestBalloonAndControlSocket drives one guest with a balloon through
// the control socket, in order: its description, memory statistics and
// answers to bad requests; free page reporting, then the balloon, giving
// memory back to the host; pause and resume; and shutdown by the ACPI
// power button. One boot serves them all: boots are what the test host
// is slow at.
func TestBalloonAndControlSocket(t *testing.T) {
	v := start(t, "guest", guestInitrd(t), machineSpec{cpus: 1, memory: fmt.Sprint(memMiB), extra: []string{"--balloon"}, api: true})
	v.ready(t)
	require.Equal(t, "bound", v.one(t, "balloon"), "the guest's virtio_balloon driver took the device\n%s", v.output())
	features := v.one(t, "balloon_features")
	for _, bit := range []int{1, 2, 5, 32} { // STATS_VQ, DEFLATE_ON_OOM, REPORTING, VERSION_1
		require.True(t, len(features) > bit && features[bit] == '1', "feature bit %d not negotiated: %s", bit, features)
	}
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
		memTotal := v.meminfo(t)["total_kb"]
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
		assert.Equal(t, memTotal*1024, total, "total_memory is the guest's MemTotal, in bytes")
		// Less what the kernel keeps for itself, as tests/linuxboot
		// bounds MemTotal: about 48 MiB and a few percent of RAM.
		assert.Less(t, total, uint64(memMiB<<20))
		assert.Greater(t, total, uint64(memMiB<<20)*94/100-48<<20, "total_memory for %d MiB of RAM", memMiB)
		assert.Less(t, s.Stats["free_memory"], total)
		assert.Greater(t, s.Stats["available_memory"], uint64(0))
		assert.False(t, s.UpdatedAt.IsZero(), "the statistics' time")
		assert.InDelta(t, v.rssMiB(t), float64(s.HostRSSBytes)/(1<<20), 32, "host_rss_bytes is gvmm's VmRSS")
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
			{"larger than RAM", "PUT", "/vm/balloon", fmt.Sprintf(`{"size_mib": %d}`, memMiB+1), 400, "larger than the guest's memory"},
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

	// The balloon stays empty: only the guest's reports of free 2 MiB
	// blocks give the memory back once freed.
	t.Run("free page reporting", func(t *testing.T) {
		const (
			touchMiB   = 300
			minDropMiB = 240
			within     = 30 * time.Second
		)
		before := v.rssMiB(t)
		v.alloc(t, touchMiB)
		peak := v.rssMiB(t)
		require.GreaterOrEqual(t, peak-before, float64(minDropMiB), "the guest's writes are backed by the VMM's memory")
		v.command(t, "free", "freed", apiTimeout)
		freed := time.Now()
		rss := peak
		for ; peak-rss < minDropMiB; rss = v.rssMiB(t) {
			require.True(t, time.Since(freed) < within, "RSS %.0f MiB %s after the guest freed %d MiB (peak %.0f)\n%s",
				rss, within, touchMiB, peak, v.output())
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("RSS %.0f MiB after boot, %.0f MiB with %d MiB touched, %.0f MiB %s after freeing",
			before, peak, touchMiB, rss, time.Since(freed).Round(10*time.Millisecond))
		assert.Equal(t, &api.BalloonInfo{}, v.info(t).Balloon, "the balloon was never inflated: the reports did it")
	})

	// The guest frees most of an allocation in pieces too small for free
	// page reporting, so that what goes back to the host when the balloon
	// inflates is the balloon's doing.
	t.Run("inflate and deflate", func(t *testing.T) {
		const (
			touchMiB   = 256
			balloonMiB = 192
			// reuseMiB is more than the guest has free with the balloon
			// inflated.
			reuseMiB   = 320
			minDropMiB = balloonMiB * 8 / 10
			inflateBy  = 15 * time.Second
			deflateBy  = 30 * time.Second
		)
		v.alloc(t, touchMiB)
		peak := v.rssMiB(t)
		require.Equal(t, strconv.Itoa(touchMiB*63/64), v.command(t, "fragment", "fragmented", allocTimeout))
		// Longer than free page reporting's 2 s delay.
		time.Sleep(4 * time.Second)
		fragmented := v.rssMiB(t)
		require.Less(t, peak-fragmented, 16.0, "RSS fell from %.0f to %.0f MiB without the balloon: something else returns the freed pages", peak, fragmented)
		freeBefore := v.meminfo(t)["free_kb"]

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
			if fragmented-rss >= minDropMiB && info.Balloon.ActualMiB == balloonMiB {
				break
			}
			require.True(t, time.Since(asked) < inflateBy,
				"%s after asking for %d MiB: RSS %.0f MiB (%.0f before), balloon %+v\n%s",
				inflateBy, balloonMiB, rss, fragmented, *info.Balloon, v.output())
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("RSS %.0f MiB with %d MiB touched, %.0f MiB with most of it freed in pieces, %.0f MiB %s after inflating to %d MiB",
			peak, touchMiB, fragmented, rss, time.Since(asked).Round(10*time.Millisecond), balloonMiB)
		assert.Equal(t, uint64(balloonMiB), info.Balloon.RequestedMiB)
		assert.Equal(t, api.StateRunning, info.State)
		freeInflated := v.meminfo(t)["free_kb"]
		assert.Less(t, freeInflated+balloonMiB*1024*9/10, freeBefore, "the guest's MemFree with %d MiB in the balloon", balloonMiB)

		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		require.NoError(t, v.client.SetBalloon(ctx, 0))
		asked = time.Now()
		for info = v.info(t); info.Balloon.ActualMiB != 0; info = v.info(t) {
			require.True(t, time.Since(asked) < deflateBy, "balloon still %+v %s after deflating\n%s", *info.Balloon, deflateBy, v.output())
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("deflated in %s", time.Since(asked).Round(10*time.Millisecond))
		assert.Greater(t, v.meminfo(t)["free_kb"]+balloonMiB*1024/10, freeBefore, "the guest's MemFree after deflating")
		v.command(t, "free", "freed", apiTimeout)
		v.alloc(t, reuseMiB) // the memory is the guest's again
		v.command(t, "free", "freed", apiTimeout)
	})

	t.Run("pause and resume", func(t *testing.T) {
		v.send(t, "ticks")
		v.waitFor(t, "tick", 30*time.Second, count(2))
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		require.NoError(t, v.client.Pause(ctx))
		assert.Equal(t, api.StatePaused, v.info(t).State)
		// Let output already written by the paused guest reach us.
		time.Sleep(200 * time.Millisecond)
		n := len(v.out.Values("tick"))
		time.Sleep(2 * time.Second)
		assert.Len(t, v.out.Values("tick"), n, "ticks while paused")
		var apiErr *api.Error
		if assert.ErrorAs(t, v.client.Pause(ctx), &apiErr, "pausing twice") {
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
		assert.Equal(t, []string{"1"}, v.out.Values("powerbutton"), "the guest saw the power button")
		assert.Contains(t, v.errb.String(), "powered off")
	})
	assert.Empty(t, v.out.Values("error"), "the guest reported errors\n%s", v.output())
}

// TestKSMMergesGuests runs two guests marked --mergeable side by side,
// from the same kernel and initramfs, and a third without. Each guest
// writes the same 64 MiB, no two pages of it alike, so that only pages of
// two guests can merge; the host's KSM is to back most of them with the
// same pages in the first two guests, and none of the third. The three
// have one vCPU each, more in all than the test host has CPUs, which the
// over-commit rule allows: it is about one guest's vCPUs.
func TestKSMMergesGuests(t *testing.T) {
	const (
		touchMiB  = 64
		minShared = touchMiB << 20 / 4096 * 9 / 10 // pages
		within    = 90 * time.Second
	)
	settings := []string{"run", "sleep_millisecs", "pages_to_scan"}
	saved := map[string]uint64{}
	for _, name := range settings {
		saved[name] = ksm(t, name)
	}
	t.Cleanup(func() {
		for _, name := range settings {
			setKSM(t, name, saved[name])
		}
	})
	initrd := guestInitrd(t)
	var vms []*vmm
	for _, name := range []string{"mergeable-1", "mergeable-2", "unmarked"} {
		var extra []string
		if name != "unmarked" {
			extra = append(extra, "--mergeable")
		}
		// One guest runs at a time, the others paused: the emulated test
		// host freezes when KVM guests run side by side on its vCPU. KSM
		// merges the memory of paused guests all the same.
		v := start(t, name, initrd, machineSpec{cpus: 1, memory: "256M", extra: extra, api: true})
		v.ready(t)
		assert.Equal(t, "1", v.one(t, "nproc"))
		v.alloc(t, touchMiB)
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		require.NoError(t, v.client.Pause(ctx))
		cancel()
		vms = append(vms, v)
	}
	_, marked := mergeableFrames(t, vms[2].pid())
	require.False(t, marked, "the guest without --mergeable has memory marked mergeable")

	// Scanning only now leaves the test host's CPU to the guests.
	baseline := ksm(t, "pages_sharing")
	setKSM(t, "sleep_millisecs", 20)
	setKSM(t, "pages_to_scan", 4000)
	setKSM(t, "run", 1)
	enabled := time.Now()
	var shared int
	for {
		frames1, marked1 := mergeableFrames(t, vms[0].pid())
		frames2, marked2 := mergeableFrames(t, vms[1].pid())
		require.True(t, marked1 && marked2, "--mergeable guests' RAM is marked mergeable")
		shared = 0
		for f := range frames1 {
			if frames2[f] {
				shared++
			}
		}
		if shared >= minShared {
			break
		}
		require.True(t, time.Since(enabled) < within, "%s after KSM started: %d pages shared between the guests, pages_sharing %d (before %d), full scans %d",
			within, shared, ksm(t, "pages_sharing"), baseline, ksm(t, "full_scans"))
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%s after KSM started: %d pages (%d MiB) shared between the guests; pages_sharing %d, pages_shared %d, merged pages %d and %d, full scans %d",
		time.Since(enabled).Round(100*time.Millisecond), shared, shared>>8, ksm(t, "pages_sharing"), ksm(t, "pages_shared"),
		ksmMergingPages(t, vms[0].pid()), ksmMergingPages(t, vms[1].pid()), ksm(t, "full_scans"))
	assert.Greater(t, ksm(t, "pages_sharing"), baseline+uint64(minShared))
	assert.Zero(t, ksmMergingPages(t, vms[2].pid()), "the guest without --mergeable has no merged pages")
	for _, v := range vms {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		require.NoError(t, v.client.Resume(ctx))
		cancel()
		v.quit(t)
	}
}

// TestCPUOvercommit checks the rule on vCPUs: one guest may not have more
// than the host's logical CPUs unless allowed, and then runs with them
// and gvmm warns. (TestKSMMergesGuests runs single-vCPU guests side by
// side.)
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
}
