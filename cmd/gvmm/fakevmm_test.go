package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/console"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/machine/vmdef"
)

// The test binary stands in for the VMM that gvmm start runs when
// envFakeVMM is set, so that the lifecycle commands are tested without
// /dev/kvm (tests/lifecycle runs the real one).
const (
	// envFakeVMM says how the fake guest takes the power button:
	// "poweroff" or "ignore"; "fail" makes the VMM fail to start.
	envFakeVMM = "GVMM_TEST_FAKE_VMM"
	// envFakeEvents names a file the fake VMM appends its API calls to.
	envFakeEvents = "GVMM_TEST_FAKE_EVENTS"
	// envFakeLogBytes is how much the fake VMM logs as it starts.
	envFakeLogBytes = "GVMM_TEST_FAKE_LOG_BYTES"
	// envFakePauseDelay is how long the fake VMM takes to pause, as a
	// VMM whose disks are slow to quiesce (a time.Duration).
	envFakePauseDelay = "GVMM_TEST_FAKE_PAUSE_DELAY"
	// envAsGVMM makes the test binary gvmm itself, for the tests that
	// run it from a shell (completion) or a terminal (tmux).
	envAsGVMM = "GVMM_TEST_AS_GVMM"
	// fakeBalloonMiB is the balloon size the fake guest reports.
	fakeBalloonMiB = 64
)

// The fake VMM's metrics grow at these rates from its start, so that
// gvmm top shows them as they are.
const (
	fakeCPU       = 0.25 // seconds a second
	fakeGuestCPU  = 0.20
	fakeRSS       = 100 * miB
	fakeDiskRead  = 3 * miB // bytes a second
	fakeDiskWrite = 1 * miB
	fakeNetRx     = 2 * miB
	fakeNetTx     = 512 << 10
)

func TestMain(m *testing.M) {
	if os.Getenv(envAsGVMM) != "" {
		os.Exit(execute(osEnv(), os.Args[1:]))
	}
	if mode := os.Getenv(envFakeVMM); mode != "" && len(os.Args) > 1 && os.Args[1] == "run" {
		os.Exit(fakeVMM(mode, os.Args[2:]))
	}
	os.Exit(m.Run())
}

// fakeVMM takes the arguments gvmm start gives "gvmm run" and does what
// a VMM does with them, with a guest that echoes console lines.
func fakeVMM(mode string, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	config := fs.String("config", "", "")
	apiSocket := fs.String("api-socket", "", "")
	consoleSocket := fs.String("console-socket", "", "")
	consoleLog := fs.String("console-log", "", "")
	pidFile := fs.String("pid-file", "", "")
	logFile := fs.String("log-file", "", "")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	var logOut io.Writer = os.Stderr
	if *logFile != "" {
		lf, err := openVMMLog(*logFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return exitFault
		}
		defer lf.Close()
		logOut = lf
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))
	if n, err := strconv.ParseInt(os.Getenv(envFakeLogBytes), 10, 64); err == nil {
		// As a guest that reboots again and again, with on_reboot restart.
		filler := strings.Repeat("x", 1000)
		for written := int64(0); written < n; written += int64(len(filler)) {
			log.Info("the guest rebooted; restarting it", "filler", filler)
		}
	}
	if mode == "fail" {
		log.Error("creating the machine", "err", "fake failure for the test")
		return exitFault
	}
	def, err := vmdef.ParseFile(*config)
	if err != nil {
		log.Error("definition", "err", err)
		return exitUsage
	}
	pf, err := state.CreatePIDFile(*pidFile)
	if err != nil {
		log.Error("pid file", "err", err)
		return exitFault
	}
	defer pf.Remove()
	hub, err := console.Listen(*consoleSocket, log)
	if err != nil {
		log.Error("console", "err", err)
		return exitFault
	}
	defer hub.Close()
	lf, err := console.OpenLog(*consoleLog, console.LogLimit, log)
	if err != nil {
		log.Error("console log", "err", err)
		return exitFault
	}
	defer lf.Close()
	out := io.MultiWriter(hub, lf, os.Stdout)
	fmt.Fprintf(out, "fake guest %s booted\n", def.Name)
	go func() {
		sc := bufio.NewScanner(hub.Input())
		for sc.Scan() {
			fmt.Fprintf(out, "echo: %s\n", sc.Text())
		}
	}()

	ctx, end := context.WithCancel(context.Background())
	cpus, memory := sizeOf(def)
	vm := &fakeGuest{end: end, mode: mode, events: os.Getenv(envFakeEvents), started: time.Now(),
		info: api.Info{State: api.StateRunning, VCPUs: cpus, MemoryMiB: memory / api.MiB,
			Balloon: &api.BalloonInfo{RequestedMiB: fakeBalloonMiB, ActualMiB: fakeBalloonMiB}}}
	srv := api.NewServer(vm, log)
	if err := srv.Listen(*apiSocket); err != nil {
		log.Error("api", "err", err)
		return exitFault
	}
	go srv.Serve(ctx)
	<-ctx.Done()
	srv.Close()
	return exitOK
}

// fakeGuest is the fake VMM's machine.
type fakeGuest struct {
	end     context.CancelFunc
	mode    string
	events  string
	started time.Time
	mu      sync.Mutex
	info    api.Info
}

func (g *fakeGuest) record(event string) {
	if g.events == "" {
		return
	}
	f, err := os.OpenFile(g.events, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, event)
}

func (g *fakeGuest) Info() api.Info {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := g.info
	i.UptimeSeconds = time.Since(g.started).Seconds()
	return i
}

func (g *fakeGuest) SetBalloon(uint64) error { return nil }

func (g *fakeGuest) SetNetRateLimit(string, api.RateLimit) error      { return api.ErrNotFound }
func (g *fakeGuest) SetDiskRateLimit(string, api.DiskRateLimit) error { return api.ErrNotFound }

func (g *fakeGuest) BalloonStats() (api.BalloonStats, error) { return api.BalloonStats{}, nil }

func (g *fakeGuest) setState(from, to string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.info.State != from {
		return api.ErrConflict
	}
	g.info.State = to
	return nil
}

func (g *fakeGuest) Pause() error {
	g.record("pause")
	if d, err := time.ParseDuration(os.Getenv(envFakePauseDelay)); err == nil {
		time.Sleep(d)
	}
	return g.setState(api.StateRunning, api.StatePaused)
}

func (g *fakeGuest) Snapshot(dir string) error {
	g.record("snapshot " + dir)
	return g.setState(api.StatePaused, api.StatePaused)
}

func (g *fakeGuest) Resume() error {
	g.record("resume")
	return g.setState(api.StatePaused, api.StateRunning)
}

func (g *fakeGuest) Shutdown() error {
	g.record("shutdown")
	if g.mode == "poweroff" {
		time.AfterFunc(100*time.Millisecond, g.end)
	}
	return nil
}

// Gatherer serves counters that grow at the fake rates.
func (g *fakeGuest) Gatherer() prometheus.Gatherer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(fakeMetrics{g.started})
	return reg
}

type fakeMetrics struct{ started time.Time }

func (fakeMetrics) Describe(chan<- *prometheus.Desc) {}

func (f fakeMetrics) Collect(ch chan<- prometheus.Metric) {
	e := time.Since(f.started).Seconds()
	send := func(name string, typ prometheus.ValueType, v float64, label ...string) {
		var names []string
		if len(label) > 0 {
			names = label[:1]
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, name, names, nil), typ, v, label[min(1, len(label)):]...)
	}
	send("gvmm_vmm_cpu_seconds_total", prometheus.CounterValue, fakeCPU*e)
	send("gvmm_vcpu_seconds_total", prometheus.CounterValue, fakeGuestCPU*e, "mode", "guest")
	send("gvmm_vmm_rss_bytes", prometheus.GaugeValue, fakeRSS)
	send("gvmm_disk_bytes_total", prometheus.CounterValue, fakeDiskRead*e, "op", "read")
	send("gvmm_disk_bytes_total", prometheus.CounterValue, fakeDiskWrite*e, "op", "write")
	send("gvmm_net_bytes_total", prometheus.CounterValue, fakeNetRx*e, "direction", "rx")
	send("gvmm_net_bytes_total", prometheus.CounterValue, fakeNetTx*e, "direction", "tx")
}

func (g *fakeGuest) Stop() {
	g.record("stop")
	g.end()
}
