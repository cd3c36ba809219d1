// Package net is a virtio-net device (spec 5.1) backed by a TAP
// interface. Frames move by scatter-gather straight between the guest's
// buffers and the TAP (readv and writev on the guest memory the queue's
// chain walker checked), with the virtio-net header passing through to
// the TAP's IFF_VNET_HDR header, so the guest's checksum and
// segmentation offloads reach the host's stack unchanged.
//
// Offered: CSUM, GUEST_CSUM, GUEST_TSO4/6, HOST_TSO4/6, MRG_RXBUF, MAC
// and STATUS. Left out: the control queue (and with it multiqueue, rx
// filtering, VLAN filtering and runtime offload changes), ECN and UFO
// (UFO is deprecated; ECN would need TUN_F_TSO_ECN semantics checked),
// USO, MTU and the hash and RSS features.
//
// The rx queue has its own goroutine: it reads the TAP only while the
// guest has posted buffers enough for a largest frame; without them it
// waits for the guest's rx notification and frames wait in the kernel's
// TAP queue, which drops beyond its txqueuelen. Nothing is buffered in
// the VMM and nothing spins.
package net

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/internal/ratelog"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/internal/iov"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// Feature bits (spec 5.1.3).
const (
	FeatureCSUM      = 1 << 0
	FeatureGuestCSUM = 1 << 1
	FeatureMAC       = 1 << 5
	FeatureGuestTSO4 = 1 << 7
	FeatureGuestTSO6 = 1 << 8
	FeatureHostTSO4  = 1 << 11
	FeatureHostTSO6  = 1 << 12
	FeatureMrgRxBuf  = 1 << 15
	FeatureStatus    = 1 << 16
	offeredFeatures  = FeatureCSUM | FeatureGuestCSUM | FeatureMAC | FeatureGuestTSO4 | FeatureGuestTSO6 |
		FeatureHostTSO4 | FeatureHostTSO6 | FeatureMrgRxBuf | FeatureStatus
)

// Queues: one receive and one transmit queue.
const (
	RxQueue   = 0
	TxQueue   = 1
	QueueSize = 256
)

// Frame sizes. MaxFrame is a largest GSO frame with its header: 64 KiB of
// IP packet behind an Ethernet and a VLAN header, as Linux's own
// virtio_net sizes its big receive buffers.
const (
	MaxFrame   = HeaderSize + 14 + 4 + 65535
	smallFrame = HeaderSize + 14 + 4 + 1500 // an MTU frame with a VLAN tag
	// maxIovs is Linux's IOV_MAX.
	maxIovs = 1024
)

// struct virtio_net_config offsets.
const (
	cfgMAC        = 0
	cfgStatus     = 6
	cfgMaxVQPairs = 8
	configSize    = 10
	statusLinkUp  = 1
)

// rx header field offsets within virtio_net_hdr_v1.
const hdrNumBuffers = 10

// Options configure a device.
type Options struct {
	Tap    *Tap
	MAC    [6]byte
	Limits Limits
	Log    *slog.Logger
}

// Stats count what the device moved since it was made.
type Stats struct {
	RxFrames, RxBytes uint64 // host to guest
	TxFrames, TxBytes uint64 // guest to host
	// RxDropped are chains the device returned unused (too small or
	// with device-readable buffers) and frames too large for the
	// guest's buffers; TxDropped are the guest's frames refused as
	// malformed, oversized or by the TAP.
	RxDropped, TxDropped uint64
}

type counters struct {
	rxFrames, rxBytes, txFrames, txBytes, rxDropped, txDropped atomic.Uint64
}

// Device is a virtio-net device.
type Device struct {
	tap  *Tap
	mac  [6]byte
	log  *slog.Logger
	glog *ratelog.Logger

	rxLimit, txLimit *ratelimit.Limiter
	limitsMu         sync.Mutex
	limits           Limits
	// rxWake and txWake tell a queue waiting for tokens that the
	// limits changed.
	rxWake, txWake chan struct{}

	stats counters

	// runMu guards rx, kick and hold against Quiesce and Release, which
	// come from the machine rather than the transport.
	runMu sync.Mutex
	// hold is non-nil while the device is quiesced; the rx goroutine
	// waits for it to close.
	hold     chan struct{}
	quiesced atomic.Bool
	// txMu is held by the tx queue's worker while it moves frames.
	txMu sync.Mutex

	// Set by Activate and cleared by Reset after the workers stopped
	// (the virtio.Device contract).
	mem      *memory.Memory
	features uint64
	txq      *queue.Queue
	kick     func(int)
	rx       *rxLoop
	// The tx queue worker's chain and buffer list, kept between
	// notifications so that a frame allocates nothing.
	txChain queue.Chain
	txIovs  [][]byte
}

var _ virtio.Device = (*Device)(nil)

// New returns a device on opts.Tap, which it owns from now: Close closes
// it.
func New(opts Options) (*Device, error) {
	if opts.Tap == nil {
		return nil, errors.New("virtio-net: no TAP")
	}
	if err := opts.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("virtio-net: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("virtio", "net", "tap", opts.Tap.Name())
	d := &Device{
		tap: opts.Tap, mac: opts.MAC, log: log, glog: ratelog.New(log),
		rxLimit: ratelimit.New(), txLimit: ratelimit.New(), rxWake: make(chan struct{}, 1), txWake: make(chan struct{}, 1),
	}
	d.limits = opts.Limits
	d.rxLimit.Set(opts.Limits.RX.Bytes, opts.Limits.RX.Packets)
	d.txLimit.Set(opts.Limits.TX.Bytes, opts.Limits.TX.Packets)
	return d, nil
}

// Close closes the TAP; call it after the device's last Reset.
func (d *Device) Close() error { return d.tap.Close() }

// MAC is the guest's address.
func (d *Device) MAC() [6]byte { return d.mac }

// Stats returns the device's counters.
func (d *Device) Stats() Stats {
	s := &d.stats
	return Stats{
		RxFrames: s.rxFrames.Load(), RxBytes: s.rxBytes.Load(), RxDropped: s.rxDropped.Load(),
		TxFrames: s.txFrames.Load(), TxBytes: s.txBytes.Load(), TxDropped: s.txDropped.Load(),
	}
}

// Limits returns the rate limits in force.
func (d *Device) Limits() Limits {
	d.limitsMu.Lock()
	defer d.limitsMu.Unlock()
	return d.limits
}

// SetLimits changes the rate limits at once; a queue waiting for tokens
// wakes to the new ones.
func (d *Device) SetLimits(l Limits) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("virtio-net: %w", err)
	}
	d.setLimits(l)
	return nil
}

func (d *Device) setLimits(l Limits) {
	d.limitsMu.Lock()
	d.limits = l
	d.rxLimit.Set(l.RX.Bytes, l.RX.Packets)
	d.txLimit.Set(l.TX.Bytes, l.TX.Packets)
	d.limitsMu.Unlock()
	poke(d.rxWake)
	poke(d.txWake)
}

// poke sends on a channel of one slot without blocking.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceNet }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return offeredFeatures }

// QueueMaxSizes implements virtio.Device.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, data []byte) {
	var cfg [configSize]byte
	copy(cfg[cfgMAC:], d.mac[:])
	binary.LittleEndian.PutUint16(cfg[cfgStatus:], statusLinkUp)
	binary.LittleEndian.PutUint16(cfg[cfgMaxVQPairs:], 1)
	virtio.ReadConfigBytes(cfg[:], off, data)
}

// WriteConfig implements virtio.Device: the MAC is writable only in
// legacy devices, and this one is modern only.
func (d *Device) WriteConfig(off uint64, data []byte) {
	d.glog.Debug("ignored virtio-net configuration write", "offset", off, "width", len(data))
}

// offloadFlags maps the offloads the driver can receive to the TAP's: the
// TAP then hands the guest partially checksummed and GSO frames.
func offloadFlags(features uint64) int {
	if features&FeatureGuestCSUM == 0 {
		return 0
	}
	flags := tunFCSUM
	if features&FeatureGuestTSO4 != 0 {
		flags |= tunFTSO4
	}
	if features&FeatureGuestTSO6 != 0 {
		flags |= tunFTSO6
	}
	return flags
}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if a.Mem == nil || len(a.Queues) < 2 || a.Kick == nil {
		return errors.New("virtio-net: activation without memory, queues or kick")
	}
	if a.Queues[RxQueue] == nil || a.Queues[TxQueue] == nil {
		return errors.New("virtio-net: the driver did not enable both queues")
	}
	if err := d.tap.offload(offloadFlags(a.Features)); err != nil {
		return fmt.Errorf("virtio-net: %w", err)
	}
	d.mem, d.features, d.txq = a.Mem, a.Features, a.Queues[TxQueue]
	d.runMu.Lock()
	d.kick = a.Kick
	d.rx = d.startRx(a.Queues[RxQueue])
	d.runMu.Unlock()
	d.log.Debug("virtio-net activated", "features", a.Features)
	return nil
}

// Reset implements virtio.Device.
func (d *Device) Reset() {
	d.runMu.Lock()
	rx := d.rx
	d.rx, d.kick = nil, nil
	d.runMu.Unlock()
	if rx != nil {
		rx.stop() // a Quiesce parking it meanwhile sees it end
	}
	d.mem, d.features, d.txq = nil, 0, nil
	d.txIovs = nil // slices of the guest memory that goes with the reset
	if err := d.tap.offload(0); err != nil {
		d.log.Warn("clearing the TAP's offloads", "err", err)
	}
}

// Process implements virtio.Device.
func (d *Device) Process(ctx context.Context, idx int) error {
	switch idx {
	case RxQueue:
		if d.rx != nil {
			return d.rx.notified()
		}
	case TxQueue:
		return d.processTx(ctx)
	}
	return nil
}

// processTx writes each of the guest's frames to the TAP, header and
// all. Each chain goes back, with an interrupt if the driver wants one
// (used_event), as soon as its frame is written: the guest's stack frees
// the frame's buffers and sends more while the next frame is written,
// instead of waiting for the whole batch.
func (d *Device) processTx(ctx context.Context) error {
	d.txMu.Lock()
	defer d.txMu.Unlock()
	c, iovs := &d.txChain, d.txIovs
	defer func() { d.txIovs = iovs[:0] }()
	// A quiesced device takes no frame; Release kicks the queue.
	for ctx.Err() == nil && !d.quiesced.Load() {
		ok, err := d.txq.Pop(c)
		if err != nil || !ok {
			return err
		}
		var n int
		iovs, n, err = iov.Append(iovs[:0], d.mem, c.Readable)
		switch {
		case err != nil:
			d.txDrop(c.Head, "unmapped tx buffer", "err", err)
		case n < HeaderSize || n > MaxFrame:
			d.txDrop(c.Head, "tx frame of the wrong size", "bytes", n, "min", HeaderSize, "max", MaxFrame)
		case len(iovs) > maxIovs:
			d.txDrop(c.Head, "tx frame in too many buffers", "buffers", len(iovs))
		default:
			if wait := d.txLimit.Take(n - HeaderSize); wait > 0 {
				ratelimit.Sleep(ctx, wait, d.txWake)
				if ctx.Err() != nil {
					return nil // a reset: the chain goes with the ring
				}
			}
			d.send(c.Head, iovs, n)
		}
		if err := d.txq.Push(c.Head, 0); err != nil {
			return err
		}
		if err := d.txq.SignalUsed(); err != nil {
			return err
		}
	}
	return nil
}

// send writes one frame; the TAP refusing it (a bad GSO header, a full
// queue) drops it, as a NIC would.
func (d *Device) send(head uint16, iovs [][]byte, n int) {
	if _, err := d.tap.writev(iovs); err != nil {
		lvl := slog.LevelWarn
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS) {
			lvl = slog.LevelDebug
		}
		d.stats.txDropped.Add(1)
		d.glog.Log(lvl, "TAP refused a tx frame", "head", head, "bytes", n, "err", err)
		return
	}
	d.stats.txFrames.Add(1)
	d.stats.txBytes.Add(uint64(n - HeaderSize))
}

func (d *Device) txDrop(head uint16, msg string, args ...any) {
	d.stats.txDropped.Add(1)
	d.glog.Warn(msg, append([]any{"head", head}, args...)...)
}

// closedErr reports whether err means the TAP's reads were interrupted or
// the TAP closed.
func closedErr(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed)
}
