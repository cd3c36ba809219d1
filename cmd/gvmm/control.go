package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/api"
	vnet "github.com/gvmm-dev/gvmm/virtio/net"
)

// control adapts a machine to the control API, translating its errors
// into the API's classes.
type control struct {
	m         *machine.Machine
	reg       *prometheus.Registry
	snapshots snapshotPlace
}

var _ api.VM = control{}

// newControl returns m's adapter, whose metrics are the machine's and the
// Go runtime's (the process collector is left out: it lists
// /proc/self/fd, which the seccomp filter does not allow).
func newControl(m *machine.Machine, snapshots snapshotPlace) control {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector(), collectors.NewGoCollector())
	return control{m: m, reg: reg, snapshots: snapshots}
}

func (c control) Gatherer() prometheus.Gatherer { return c.reg }

func (c control) Info() api.Info {
	cfg := c.m.Config()
	info := api.Info{
		State:         string(c.m.State()),
		VCPUs:         cfg.CPUs,
		MemoryMiB:     cfg.Memory / api.MiB,
		UptimeSeconds: c.m.Uptime().Seconds(),
	}
	if target, actual, ok := c.m.Balloon(); ok {
		info.Balloon = &api.BalloonInfo{RequestedMiB: target / api.MiB, ActualMiB: actual / api.MiB}
	}
	for i, d := range c.m.Disks() {
		info.Disks = append(info.Disks, api.DiskInfo{
			ID: strconv.Itoa(i), Path: d.Path, ReadOnly: d.ReadOnly, Serial: d.Serial,
			RateLimit: api.DiskRateLimit{Bytes: apiBucket(d.Limit.Bytes), Ops: apiBucket(d.Limit.Ops)},
		})
	}
	for _, s := range cfg.Shares {
		info.Shares = append(info.Shares, api.ShareInfo{Path: s.Path, Tag: s.Tag, ReadOnly: s.ReadOnly, SetID: s.SetID})
	}
	if v, st, ok := c.m.Vsock(); ok {
		info.Vsock = &api.VsockInfo{CID: v.CID, Socket: v.Socket, Connections: st.Conns, Accepted: st.Accepted, Refused: st.Refused}
	}
	for _, n := range c.m.Nets() {
		info.Nets = append(info.Nets, api.NetInfo{
			ID: n.Tap, MAC: n.MAC.String(), RateLimit: apiRateLimit(n.Limits),
			RxBytes: n.Stats.RxBytes, RxPackets: n.Stats.RxFrames, RxDropped: n.Stats.RxDropped,
			TxBytes: n.Stats.TxBytes, TxPackets: n.Stats.TxFrames, TxDropped: n.Stats.TxDropped,
		})
	}
	return info
}

func apiBucket(b ratelimit.Bucket) *api.Bucket { return &api.Bucket{Rate: b.Rate, Burst: b.Burst} }

func apiRateLimit(l vnet.Limits) api.RateLimit {
	conv := func(l vnet.Limit) *api.Limit {
		return &api.Limit{
			Bytes:   api.Bucket{Rate: l.Bytes.Rate, Burst: l.Bytes.Burst},
			Packets: api.Bucket{Rate: l.Packets.Rate, Burst: l.Packets.Burst},
		}
	}
	return api.RateLimit{RX: conv(l.RX), TX: conv(l.TX)}
}

// SetNetRateLimit replaces the limits of the directions l gives.
func (c control) SetNetRateLimit(id string, l api.RateLimit) error {
	for _, n := range c.m.Nets() {
		if n.Tap != id {
			continue
		}
		conv := func(l *api.Limit, old vnet.Limit) vnet.Limit {
			if l == nil {
				return old
			}
			return vnet.Limit{
				Bytes:   ratelimit.Bucket{Rate: l.Bytes.Rate, Burst: l.Bytes.Burst},
				Packets: ratelimit.Bucket{Rate: l.Packets.Rate, Burst: l.Packets.Burst},
			}
		}
		return apiError(c.m.SetNetLimits(id, vnet.Limits{RX: conv(l.RX, n.Limits.RX), TX: conv(l.TX, n.Limits.TX)}))
	}
	return fmt.Errorf("%w: %s", api.ErrNotFound, id)
}

// SetDiskRateLimit replaces the buckets l gives.
func (c control) SetDiskRateLimit(id string, l api.DiskRateLimit) error {
	lim, err := c.m.DiskLimit(id)
	if err != nil {
		return apiError(err)
	}
	for _, b := range []struct {
		from *api.Bucket
		to   *ratelimit.Bucket
	}{{l.Bytes, &lim.Bytes}, {l.Ops, &lim.Ops}} {
		if b.from != nil {
			*b.to = ratelimit.Bucket{Rate: b.from.Rate, Burst: b.from.Burst}
		}
	}
	return apiError(c.m.SetDiskLimit(id, lim))
}

func (c control) SetBalloon(bytes uint64) error { return apiError(c.m.SetBalloon(bytes)) }

func (c control) BalloonStats() (api.BalloonStats, error) {
	stats, at, err := c.m.BalloonStats()
	if err != nil {
		return api.BalloonStats{}, apiError(err)
	}
	rss, err := selfRSS()
	if err != nil {
		return api.BalloonStats{}, err
	}
	return api.BalloonStats{Stats: stats, UpdatedAt: at, HostRSSBytes: rss}, nil
}

func (c control) Pause() error  { return apiError(c.m.Pause()) }
func (c control) Resume() error { return apiError(c.m.Resume()) }

func (c control) Snapshot(dir string) error {
	if err := c.snapshots.check(dir); err != nil {
		return fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	return apiError(c.m.Snapshot(dir))
}

func (c control) Shutdown() error { return apiError(c.m.Shutdown()) }
func (c control) Stop()           { c.m.Stop() }

// apiError wraps the machine's errors in the API's sentinel for their class.
func apiError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, machine.ErrNoNet), errors.Is(err, machine.ErrNoDisk):
		return fmt.Errorf("%w: %w", api.ErrNotFound, err)
	case errors.Is(err, machine.ErrNoBalloon):
		return fmt.Errorf("%w: %w", api.ErrNoBalloon, err)
	case errors.Is(err, machine.ErrNotRunning):
		return fmt.Errorf("%w: %w", api.ErrNotRunning, err)
	case errors.Is(err, machine.ErrState):
		return fmt.Errorf("%w: %w", api.ErrConflict, err)
	case errors.Is(err, machine.ErrInvalidConfig):
		return fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	return err
}

// selfRSS reads this process's resident memory from /proc.
func selfRSS() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing VmRSS: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/self/status")
}
