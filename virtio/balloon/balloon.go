// Package balloon is a virtio-balloon device (spec 5.5). The host sets a
// target in SetTarget; the guest driver inflates the balloon towards it,
// and the device returns each inflated page to the host at once with
// madvise(MADV_DONTNEED), which frees the backing of a private anonymous
// guest RAM mapping (the page refaults as zeroes if the guest touches it
// again). The device also collects the guest's memory statistics and
// releases the free page ranges the guest reports.
//
// Every page number and range comes from the guest and is checked against
// guest RAM; bad ones are skipped and logged under a rate limit.
package balloon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// Feature bits (spec 5.5.3). VIRTIO_F_VERSION_1 comes from the transport.
const (
	FeatureMustTellHost = 1 << 0 // not offered
	FeatureStatsVQ      = 1 << 1
	FeatureDeflateOnOOM = 1 << 2
	FeatureFreePageHint = 1 << 3 // not offered
	FeaturePagePoison   = 1 << 4 // not offered
	FeatureReporting    = 1 << 5
	offeredFeatures     = FeatureStatsVQ | FeatureDeflateOnOOM | FeatureReporting
)

// Queues. Linux needs at least PAGE_REPORTING_CAPACITY (32) entries in
// the reporting queue.
const (
	QueueSize = 256
	numQueues = 4 // inflateq, deflateq, statsq, reporting_vq
)

// maxTargetPages is the largest num_pages, a le32.
const maxTargetPages = 1<<32 - 1

// struct virtio_balloon_config offsets.
const (
	cfgNumPages          = 0x00 // device-written target, in 4 KiB pages
	cfgActual            = 0x04 // driver-written balloon size, in 4 KiB pages
	cfgFreePageHintCmdID = 0x08 // FREE_PAGE_HINT only: reads as zero
	cfgPoisonVal         = 0x0c // PAGE_POISON only: reads as zero
	configSize           = 0x10
)

// Role is what a virtqueue is for.
type Role int

// Queue roles.
const (
	RoleNone Role = iota
	RoleInflate
	RoleDeflate
	RoleStats
	RoleReporting
)

func (r Role) String() string {
	switch r {
	case RoleInflate:
		return "inflate"
	case RoleDeflate:
		return "deflate"
	case RoleStats:
		return "stats"
	case RoleReporting:
		return "reporting"
	}
	return "none"
}

// QueueRoles maps queue indexes to roles for the negotiated features.
// Linux asks for inflate, deflate, stats (STATS_VQ), free_page
// (FREE_PAGE_HINT) and reporting (REPORTING) in that order, and
// virtio_pci numbers only the queues it asks for consecutively
// (vp_find_vqs_msix's queue_idx, since Linux 5.0): without STATS_VQ the
// reporting queue is queue 2. QEMU and Cloud Hypervisor agree.
func QueueRoles(features uint64) []Role {
	roles := []Role{RoleInflate, RoleDeflate}
	if features&FeatureStatsVQ != 0 {
		roles = append(roles, RoleStats)
	}
	if features&FeatureFreePageHint != 0 {
		roles = append(roles, RoleNone) // never offered; keeps the numbering honest
	}
	if features&FeatureReporting != 0 {
		roles = append(roles, RoleReporting)
	}
	return roles
}

// Errors of the host-side API.
var (
	ErrTargetTooLarge = errors.New("balloon target larger than guest RAM")
	ErrNoStatsQueue   = errors.New("the balloon driver has no statistics queue")
	ErrNoStatsBuffer  = errors.New("the balloon driver has not given a statistics buffer yet")
)

// TargetError is a balloon target the device refuses.
type TargetError struct {
	Target, Memory uint64 // bytes
}

func (e *TargetError) Error() string {
	return fmt.Sprintf("balloon target %d bytes exceeds guest RAM of %d bytes", e.Target, e.Memory)
}

func (e *TargetError) Unwrap() error { return ErrTargetTooLarge }

// Options configure a balloon.
type Options struct {
	// MemoryBytes is the guest's RAM size; targets beyond it are refused.
	MemoryBytes uint64
	// Target is the initial balloon size in bytes; 0 leaves the guest
	// all its memory.
	Target uint64
	Log    *slog.Logger
}

// Balloon is a virtio-balloon device.
type Balloon struct {
	log      *slog.Logger
	memBytes uint64
	limit    limiter
	inflated atomic.Uint64 // pages in the balloon, as the device counted them

	// Set by Activate before the workers start and cleared by Reset after
	// they stopped (the virtio.Device contract), so unguarded.
	mem    *memory.Memory
	queues []*queue.Queue
	roles  []Role

	cfgMu       sync.Mutex // configuration: vCPU threads, the API and workers
	numPages    uint32
	actual      uint32
	cfgChanged  devices.Interrupt // nil unless activated
	statsMu     sync.Mutex        // the statistics queue: its worker and the API
	statsQ      *queue.Queue      // nil unless activated with a statistics queue
	statsHeld   bool              // statsHead is a chain the device holds
	statsHead   uint16
	stats       Stats
	statsUpdate time.Time
}

var _ virtio.Device = (*Balloon)(nil)

// New returns a balloon for a guest of opts.MemoryBytes of RAM.
func New(opts Options) (*Balloon, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if opts.MemoryBytes == 0 {
		return nil, errors.New("balloon: guest RAM size not set")
	}
	b := &Balloon{log: log.With("virtio", "balloon"), memBytes: opts.MemoryBytes, limit: limiter{now: time.Now}}
	if err := b.SetTarget(opts.Target); err != nil {
		return nil, err
	}
	return b, nil
}

// SetTarget asks the guest to give bytes of its RAM to the balloon,
// rounded down to 4 KiB pages; 0 deflates it completely. Once the driver
// is running it gets a configuration change notification.
func (b *Balloon) SetTarget(bytes uint64) error {
	pages := bytes >> PageShift
	if bytes > b.memBytes || pages > maxTargetPages {
		return &TargetError{Target: bytes, Memory: b.memBytes}
	}
	b.cfgMu.Lock()
	b.numPages = uint32(pages)
	irq := b.cfgChanged
	b.cfgMu.Unlock()
	if irq == nil {
		return nil // the driver reads num_pages when it probes
	}
	if err := irq.Trigger(); err != nil {
		return fmt.Errorf("balloon configuration change notification: %w", err)
	}
	return nil
}

// Target returns the balloon size the host asked for, in bytes.
func (b *Balloon) Target() uint64 {
	b.cfgMu.Lock()
	defer b.cfgMu.Unlock()
	return uint64(b.numPages) << PageShift
}

// Actual returns the balloon size the driver last reported, in bytes.
func (b *Balloon) Actual() uint64 {
	b.cfgMu.Lock()
	defer b.cfgMu.Unlock()
	return uint64(b.actual) << PageShift
}

// InflatedPages returns how many 4 KiB pages the device has seen
// inflated and not deflated since the driver started. Unlike Actual it
// does not depend on the driver's word, but a guest can skew it by
// inflating a page twice.
func (b *Balloon) InflatedPages() uint64 { return b.inflated.Load() }

// Stats returns the statistics the guest last sent, when it sent them,
// and whether it sent any.
func (b *Balloon) Stats() (Stats, time.Time, bool) {
	b.statsMu.Lock()
	defer b.statsMu.Unlock()
	if b.stats == nil {
		return nil, time.Time{}, false
	}
	return maps.Clone(b.stats), b.statsUpdate, true
}

// RequestStats asks the guest for fresh statistics by returning the
// statistics buffer the device holds; the driver answers with a new one,
// after which Stats reports it. ErrNoStatsBuffer means an earlier request
// is still unanswered (or the driver has not started).
func (b *Balloon) RequestStats() error {
	b.statsMu.Lock()
	defer b.statsMu.Unlock()
	if b.statsQ == nil {
		return ErrNoStatsQueue
	}
	if !b.statsHeld {
		return ErrNoStatsBuffer
	}
	b.statsHeld = false
	if err := b.statsQ.Push(b.statsHead, 0); err != nil {
		return err
	}
	return b.statsQ.SignalUsed()
}

// Type implements virtio.Device.
func (b *Balloon) Type() virtio.DeviceType { return virtio.DeviceBalloon }

// Features implements virtio.Device.
func (b *Balloon) Features() uint64 { return offeredFeatures }

// QueueMaxSizes implements virtio.Device: inflateq, deflateq, statsq and
// reporting_vq, the most a driver of our features can ask for.
func (b *Balloon) QueueMaxSizes() []uint16 {
	sizes := make([]uint16, numQueues)
	for i := range sizes {
		sizes[i] = QueueSize
	}
	return sizes
}

// ReadConfig implements virtio.Device.
func (b *Balloon) ReadConfig(off uint64, data []byte) {
	var cfg [configSize]byte
	b.cfgMu.Lock()
	binary.LittleEndian.PutUint32(cfg[cfgNumPages:], b.numPages)
	binary.LittleEndian.PutUint32(cfg[cfgActual:], b.actual)
	b.cfgMu.Unlock()
	virtio.ReadConfigBytes(cfg[:], off, data)
}

// WriteConfig implements virtio.Device: only actual is driver-writable,
// at any width; the bytes of a write that fall on it are applied.
func (b *Balloon) WriteConfig(off uint64, data []byte) {
	if off >= configSize {
		return
	}
	b.cfgMu.Lock()
	defer b.cfgMu.Unlock()
	var actual [4]byte
	binary.LittleEndian.PutUint32(actual[:], b.actual)
	for i, v := range data[:min(uint64(len(data)), configSize-off)] {
		if at := off + uint64(i); at >= cfgActual && at < cfgActual+4 {
			actual[at-cfgActual] = v
		}
	}
	b.actual = binary.LittleEndian.Uint32(actual[:])
}

// Activate implements virtio.Device.
func (b *Balloon) Activate(a virtio.Activation) error {
	if a.Mem == nil {
		return errors.New("balloon: no guest memory")
	}
	if size := a.Mem.Size(); size != b.memBytes {
		b.log.Warn("balloon configured for a different guest RAM size", "configured", b.memBytes, "actual", size)
	}
	b.mem, b.queues, b.roles = a.Mem, a.Queues, QueueRoles(a.Features)
	b.statsMu.Lock()
	b.statsQ, b.statsHeld = nil, false
	for i, r := range b.roles {
		if r == RoleStats && i < len(a.Queues) {
			b.statsQ = a.Queues[i]
		}
	}
	b.statsMu.Unlock()
	b.cfgMu.Lock()
	b.cfgChanged = a.ConfigChanged
	b.cfgMu.Unlock()
	b.log.Debug("balloon activated", "features", a.Features, "queues", b.roles)
	return nil
}

// Reset implements virtio.Device. The target stays: it is the host's.
func (b *Balloon) Reset() {
	b.mem, b.queues, b.roles = nil, nil, nil
	b.statsMu.Lock()
	b.statsQ, b.statsHeld, b.statsHead = nil, false, 0
	b.statsMu.Unlock()
	b.cfgMu.Lock()
	b.cfgChanged, b.actual = nil, 0
	b.cfgMu.Unlock()
	b.inflated.Store(0) // a reset driver has taken every page back
}

// Process implements virtio.Device.
func (b *Balloon) Process(ctx context.Context, idx int) error {
	if idx < 0 || idx >= len(b.queues) || b.queues[idx] == nil {
		return nil
	}
	role := RoleNone
	if idx < len(b.roles) {
		role = b.roles[idx]
	}
	q := b.queues[idx]
	switch role {
	case RoleInflate, RoleDeflate:
		return b.processPages(ctx, q, role)
	case RoleStats:
		return b.processStats(ctx)
	case RoleReporting:
		return b.processReports(ctx, q)
	}
	// A queue the negotiated features give no use: leave its buffers.
	b.warn(slog.LevelDebug, "notification on a balloon queue without a role", "queue", idx)
	return nil
}

// complete returns a chain with nothing written and signals the driver.
func complete(q *queue.Queue, head uint16) error {
	if err := q.Push(head, 0); err != nil {
		return err
	}
	return q.SignalUsed()
}

// processPages services the inflate or deflate queue.
func (b *Balloon) processPages(ctx context.Context, q *queue.Queue, role Role) error {
	var c queue.Chain
	pfns := make([]uint32, 0, MaxPagesPerRequest)
	ranges := make([]Range, 0, MaxPagesPerRequest)
	for ctx.Err() == nil {
		ok, err := q.Pop(&c)
		if err != nil || !ok {
			return err
		}
		b.pages(&c, role, pfns, ranges)
		if err := complete(q, c.Head); err != nil {
			return err
		}
	}
	return nil
}

// pages carries out one inflate or deflate request. Deflated pages need
// nothing: anonymous memory refaults as zeroes when the guest uses it.
func (b *Balloon) pages(c *queue.Chain, role Role, pfns []uint32, ranges []Range) {
	pfns, perr := ParsePageList(*c, b.mem, pfns)
	ranges, oerr := PageRanges(b.mem, pfns, ranges)
	var n uint64
	var merr error
	for _, r := range ranges {
		n += r.Len >> PageShift
		if role == RoleInflate {
			if err := b.discard(r); err != nil && merr == nil {
				merr = err
			}
		}
	}
	if role == RoleInflate {
		b.inflated.Add(n)
	} else {
		b.deflated(n)
	}
	if perr != nil || oerr != nil || merr != nil {
		b.warn(slog.LevelWarn, "bad balloon request", "queue", role.String(), "head", c.Head, "pages", len(pfns), "used", n,
			"err", errors.Join(perr, oerr, merr))
	}
}

// deflated takes n pages off the inflated count, stopping at zero.
func (b *Balloon) deflated(n uint64) {
	for {
		old := b.inflated.Load()
		if b.inflated.CompareAndSwap(old, old-min(old, n)) {
			return
		}
	}
}

// discard gives a range of guest RAM back to the host.
func (b *Balloon) discard(r Range) error {
	s, err := b.mem.Slice(r.Addr, r.Len)
	if err != nil {
		return err
	}
	if err := unix.Madvise(s, unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("madvise(MADV_DONTNEED) of [%#x, +%#x): %w", uint64(r.Addr), r.Len, err)
	}
	return nil
}

// processReports releases each reported free page range and returns the
// report with nothing written (spec 5.5.6.6).
func (b *Balloon) processReports(ctx context.Context, q *queue.Queue) error {
	var c queue.Chain
	ranges := make([]Range, 0, MaxReportRanges)
	for ctx.Err() == nil {
		ok, err := q.Pop(&c)
		if err != nil || !ok {
			return err
		}
		var rerr, merr error
		ranges, rerr = ParseReport(c, b.mem, ranges)
		for _, r := range ranges {
			if err := b.discard(r); err != nil && merr == nil {
				merr = err
			}
		}
		if rerr != nil || merr != nil {
			b.warn(slog.LevelWarn, "bad free page report", "head", c.Head, "ranges", len(ranges),
				"err", errors.Join(rerr, merr))
		}
		if err := complete(q, c.Head); err != nil {
			return err
		}
	}
	return nil
}

// processStats takes the driver's statistics buffer and keeps it until
// RequestStats returns it (spec 5.5.6.3).
func (b *Balloon) processStats(ctx context.Context) error {
	b.statsMu.Lock()
	defer b.statsMu.Unlock()
	q := b.statsQ
	if q == nil {
		return nil
	}
	var c queue.Chain
	for ctx.Err() == nil {
		ok, err := q.Pop(&c)
		if err != nil || !ok {
			return err
		}
		if b.statsHeld {
			// Only one buffer may be outstanding; give the older back
			// as Firecracker does rather than leak it.
			b.warn(slog.LevelWarn, "balloon driver sent a second statistics buffer", "held", b.statsHead, "new", c.Head)
			if err := complete(q, b.statsHead); err != nil {
				return err
			}
		}
		stats, err := ParseStats(c, b.mem)
		if err != nil {
			b.warn(slog.LevelWarn, "bad balloon statistics buffer", "head", c.Head, "err", err)
		}
		b.stats, b.statsUpdate = stats, time.Now()
		b.statsHeld, b.statsHead = true, c.Head
	}
	return nil
}

// warn logs something the guest caused, within the rate limit.
func (b *Balloon) warn(level slog.Level, msg string, args ...any) {
	if !b.log.Enabled(context.Background(), level) {
		return
	}
	ok, suppressed := b.limit.allow()
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	b.log.Log(context.Background(), level, msg, args...)
}
