package api

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeVM is a VM with a paused/running/stopped state machine, a balloon
// (unless noBalloon) and calls recorded; err, if set, is returned by
// every call that can fail.
type fakeVM struct {
	mu        sync.Mutex
	state     string
	memMiB    uint64
	noBalloon bool
	balloon   uint64 // bytes requested
	nets      map[string]RateLimit
	disks     []DiskRateLimit // by index; disk i has serial "disk<i>"
	calls     []string
	err       error
	reg       *prometheus.Registry
	scrapes   atomic.Uint64
}

var _ VM = (*fakeVM)(nil)

func newFakeVM() *fakeVM { return &fakeVM{state: StateRunning, memMiB: 512} }

// withNet gives the fake a network device on TAP id.
func (f *fakeVM) withNet(id string) *fakeVM {
	f.nets = map[string]RateLimit{id: {}}
	return f
}

// withDisks gives the fake n disks.
func (f *fakeVM) withDisks(n int) *fakeVM {
	f.disks = make([]DiskRateLimit, n)
	return f
}

func (f *fakeVM) record(call string) error {
	f.calls = append(f.calls, call)
	return f.err
}

func (f *fakeVM) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeVM) Info() Info {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := Info{State: f.state, VCPUs: 2, MemoryMiB: f.memMiB, UptimeSeconds: 1.5}
	if !f.noBalloon {
		i.Balloon = &BalloonInfo{RequestedMiB: f.balloon / MiB, ActualMiB: f.balloon / MiB / 2}
	}
	for id, l := range f.nets {
		i.Nets = append(i.Nets, NetInfo{ID: id, MAC: "52:54:00:00:00:01", RateLimit: l, RxBytes: 1})
	}
	for n, l := range f.disks {
		i.Disks = append(i.Disks, DiskInfo{ID: strconv.Itoa(n), Path: "/img/" + strconv.Itoa(n), Serial: "disk" + strconv.Itoa(n), RateLimit: l})
	}
	return i
}

func (f *fakeVM) SetBalloon(bytes uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("balloon"); err != nil {
		return err
	}
	if f.noBalloon {
		return ErrNoBalloon
	}
	f.balloon = bytes
	return nil
}

func (f *fakeVM) BalloonStats() (BalloonStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("stats"); err != nil {
		return BalloonStats{}, err
	}
	if f.noBalloon {
		return BalloonStats{}, ErrNoBalloon
	}
	return BalloonStats{
		Stats:        map[string]uint64{"free_memory": 100 * MiB},
		UpdatedAt:    time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		HostRSSBytes: 300 * MiB,
	}, nil
}

func (f *fakeVM) SetNetRateLimit(id string, l RateLimit) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("net " + id); err != nil {
		return err
	}
	old, ok := f.nets[id]
	if !ok {
		return ErrNotFound
	}
	if l.RX != nil {
		old.RX = l.RX
	}
	if l.TX != nil {
		old.TX = l.TX
	}
	f.nets[id] = old
	return nil
}

func (f *fakeVM) SetDiskRateLimit(id string, l DiskRateLimit) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("disk " + id); err != nil {
		return err
	}
	for n := range f.disks {
		if id != strconv.Itoa(n) && id != "disk"+strconv.Itoa(n) {
			continue
		}
		if l.Bytes != nil {
			f.disks[n].Bytes = l.Bytes
		}
		if l.Ops != nil {
			f.disks[n].Ops = l.Ops
		}
		return nil
	}
	return ErrNotFound
}

// transition moves from one state to another, or fails as a Machine would.
func (f *fakeVM) transition(call, from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record(call); err != nil {
		return err
	}
	switch f.state {
	case StateStopped:
		return ErrNotRunning
	case from:
		f.state = to
		return nil
	}
	return ErrConflict
}

func (f *fakeVM) Pause() error  { return f.transition("pause", StateRunning, StatePaused) }
func (f *fakeVM) Resume() error { return f.transition("resume", StatePaused, StateRunning) }

// Snapshot needs a paused machine, as a Machine's does.
func (f *fakeVM) Snapshot(dir string) error {
	return f.transition("snapshot "+dir, StatePaused, StatePaused)
}
func (f *fakeVM) Shutdown() error {
	return f.transition("shutdown", StateRunning, StateStopped)
}

// Gatherer serves one counter, the number of scrapes, so a test sees
// it move.
func (f *fakeVM) Gatherer() prometheus.Gatherer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reg == nil {
		f.reg = prometheus.NewRegistry()
		scrapes := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fake_scrapes_total", Help: "Scrapes."},
			func() float64 { return float64(f.scrapes.Add(1)) })
		f.reg.MustRegister(scrapes)
	}
	return f.reg
}

func (f *fakeVM) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	_ = f.record("stop")
	f.state = StateStopped
}
