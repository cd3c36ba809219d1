// Package blk is a virtio-blk device backed by a raw disk image. Requests
// are parsed by the pure function ParseRequest and executed with vectored
// I/O straight between the image and guest memory.
package blk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/internal/ratelog"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/internal/iov"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// Geometry and limits advertised to the driver.
const (
	SectorSize = 512
	QueueSize  = 256
	// SegMax leaves two descriptors of a full-length chain for the
	// header and the status byte.
	SegMax  = QueueSize - 2
	SizeMax = 1 << 20
	// discardAlignment hints 4 KiB, the granularity at which host file
	// systems can actually free blocks.
	discardAlignment = 4096 / SectorSize
	// zeroChunk is how many bytes of a discard or write-zeroes range one
	// fallocate call covers: at most this much work keeps a Stop or
	// Pause waiting.
	zeroChunk = 16 << 20
	serialLen = 20 // VIRTIO_BLK_ID_BYTES
)

// Feature bits (spec 5.2.3).
const (
	FeatureSizeMax     = 1 << 1
	FeatureSegMax      = 1 << 2
	FeatureRO          = 1 << 5
	FeatureBlkSize     = 1 << 6
	FeatureFlush       = 1 << 9
	FeatureDiscard     = 1 << 13
	FeatureWriteZeroes = 1 << 14
)

// struct virtio_blk_config offsets.
const (
	cfgCapacity              = 0x00
	cfgSizeMax               = 0x08
	cfgSegMax                = 0x0c
	cfgBlkSize               = 0x14
	cfgMaxDiscardSectors     = 0x24
	cfgMaxDiscardSeg         = 0x28
	cfgDiscardAlignment      = 0x2c
	cfgMaxWriteZeroesSectors = 0x30
	cfgMaxWriteZeroesSeg     = 0x34
	cfgWriteZeroesMayUnmap   = 0x38
	configSize               = 0x3c
)

// ErrInUse reports a disk image locked by another process.
var ErrInUse = errors.New("disk image in use")

// ErrReadOnly is the error for a write to a read-only disk; the spec
// requires VIRTIO_BLK_S_IOERR for it (5.2.6.2).
var ErrReadOnly = errors.New("write to a read-only disk")

// Options configure a disk.
type Options struct {
	ReadOnly bool
	Serial   string // returned by GET_ID, at most 20 bytes
	Limit    Limit
	Log      *slog.Logger
}

// Disk is a virtio-blk device over a raw image file.
type Disk struct {
	f         *os.File
	fd        int // f's descriptor; f keeps it open
	path      string
	readOnly  bool
	capacity  uint64 // sectors
	serial    [serialLen]byte
	config    [configSize]byte
	log       *slog.Logger
	glog      *ratelog.Logger                               // for failed requests: a guest can send them without end
	datasync  func(fd int) error                            // unix.Fdatasync; a test observes it
	fallocate func(fd int, mode uint32, off, n int64) error // unix.Fallocate; a test slows it down
	gate      ioGate
	// syncErr is the first failed fdatasync's error. Linux reports a
	// writeback error to a file once: a later fdatasync succeeds although
	// the writes it covered are lost. Every later flush fails with it, as
	// QEMU's do, so that the guest never hears its data is safe again.
	syncErr atomic.Pointer[error]
	stats   stats

	limiter *ratelimit.Limiter
	limitMu sync.Mutex
	limit   Limit
	// limitWake tells a request waiting for tokens that the limit
	// changed.
	limitWake chan struct{}

	// Set by Activate before the workers start and cleared by Reset
	// after they stopped (the virtio.Device contract), so unguarded.
	mem          *memory.Memory
	queues       []*queue.Queue
	writeThrough bool
}

var _ virtio.Device = (*Disk)(nil)

// Open opens the raw image at path and locks it: exclusively if
// writable, shared if read-only, so two VMs cannot corrupt one image.
func Open(path string, opts Options) (*Disk, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if len(opts.Serial) > serialLen {
		return nil, fmt.Errorf("disk serial %q is longer than %d bytes", opts.Serial, serialLen)
	}
	flag, lock := os.O_RDWR, unix.LOCK_EX
	if opts.ReadOnly {
		flag, lock = os.O_RDONLY, unix.LOCK_SH
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk image: %w", err)
	}
	d := &Disk{f: f, fd: int(f.Fd()), path: path, readOnly: opts.ReadOnly, log: log.With("disk", path),
		datasync: unix.Fdatasync, fallocate: unix.Fallocate, limiter: ratelimit.New(), limitWake: make(chan struct{}, 1)}
	d.glog = ratelog.New(d.log)
	d.gate.idle.L = &d.gate.mu
	if err := unix.Flock(d.fd, lock|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("disk image %s is in use by another process: %w", path, ErrInUse)
		}
		return nil, fmt.Errorf("lock disk image %s: %w", path, err)
	}
	size, err := f.Seek(0, io.SeekEnd) // also sizes block devices
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("size disk image %s: %w", path, err)
	}
	if size%SectorSize != 0 {
		d.log.Warn("disk image size is not a multiple of 512 bytes; the guest will not see the last partial sector",
			"size", size)
	}
	d.capacity = uint64(size) / SectorSize
	copy(d.serial[:], opts.Serial)
	d.fillConfig()
	d.SetLimit(opts.Limit)
	return d, nil
}

func (d *Disk) fillConfig() {
	le := binary.LittleEndian
	c := d.config[:]
	le.PutUint64(c[cfgCapacity:], d.capacity)
	le.PutUint32(c[cfgSizeMax:], SizeMax)
	le.PutUint32(c[cfgSegMax:], SegMax)
	le.PutUint32(c[cfgBlkSize:], SectorSize)
	le.PutUint32(c[cfgMaxDiscardSectors:], maxRangeSectors)
	le.PutUint32(c[cfgMaxDiscardSeg:], maxRangeSegments)
	le.PutUint32(c[cfgDiscardAlignment:], discardAlignment)
	le.PutUint32(c[cfgMaxWriteZeroesSectors:], maxRangeSectors)
	le.PutUint32(c[cfgMaxWriteZeroesSeg:], maxRangeSegments)
	c[cfgWriteZeroesMayUnmap] = 1
}

// Close releases the image and its lock. Call it after the device was
// reset or the machine stopped.
func (d *Disk) Close() error { return d.f.Close() }

// Stat describes the open image, which a confined VMM can no longer
// reach by path.
func (d *Disk) Stat() (os.FileInfo, error) { return d.f.Stat() }

// Capacity returns the disk size in 512-byte sectors.
func (d *Disk) Capacity() uint64 { return d.capacity }

// Type implements virtio.Device.
func (d *Disk) Type() virtio.DeviceType { return virtio.DeviceBlock }

// Features implements virtio.Device.
func (d *Disk) Features() uint64 {
	f := uint64(FeatureSizeMax | FeatureSegMax | FeatureBlkSize | FeatureFlush)
	if d.readOnly {
		return f | FeatureRO
	}
	return f | FeatureDiscard | FeatureWriteZeroes
}

// QueueMaxSizes implements virtio.Device: one request queue.
func (d *Disk) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Disk) ReadConfig(off uint64, data []byte) { virtio.ReadConfigBytes(d.config[:], off, data) }

// WriteConfig implements virtio.Device; no field is writable without
// VIRTIO_BLK_F_CONFIG_WCE.
func (d *Disk) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (d *Disk) Activate(a virtio.Activation) error {
	d.mem, d.queues = a.Mem, a.Queues
	// Without a negotiated FLUSH the driver cannot ask for stability,
	// so every write must be stable when it completes (5.2.6.2).
	d.writeThrough = a.Features&FeatureFlush == 0
	return nil
}

// Reset implements virtio.Device.
func (d *Disk) Reset() {
	d.mem, d.queues, d.writeThrough = nil, nil, false
}

// Process implements virtio.Device: completes every available request.
func (d *Disk) Process(ctx context.Context, idx int) error {
	q := d.queues[idx]
	var c queue.Chain
	for ctx.Err() == nil {
		ok, err := q.Pop(&c)
		if err != nil || !ok {
			return err
		}
		n, err := d.handle(ctx, &c)
		if err != nil {
			return nil // a reset: the chain goes with the ring
		}
		if err := q.Push(c.Head, n); err != nil {
			return err
		}
		if err := q.SignalUsed(); err != nil {
			return err
		}
	}
	return nil
}

// handle executes one request and writes its status; it returns the
// bytes written into the chain's buffers, or ctx's error if ctx ended
// before the request was done, which leaves it without a status.
func (d *Disk) handle(ctx context.Context, c *queue.Chain) (uint32, error) {
	start := time.Now()
	req, err := ParseRequest(*c, d.mem, d.capacity)
	if errors.Is(err, ErrNoStatus) {
		d.glog.Warn("dropping virtio-blk request without a status byte", "err", err)
		d.stats.count(req.Type, 0, true, time.Since(start))
		return 0, nil
	}
	var n uint32
	var moved uint64
	if err == nil {
		n, moved, err = d.run(ctx, req)
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	status := byte(StatusOK)
	switch {
	case errors.Is(err, ErrUnsupported):
		status = StatusUnsupported
		d.glog.Debug("unsupported virtio-blk request", "err", err)
	case err != nil:
		status = StatusIOErr
		d.glog.Warn("virtio-blk request failed", "type", req.Type, "sector", req.Sector, "err", err)
	}
	d.stats.count(req.Type, moved, err != nil, time.Since(start))
	if err := d.mem.WriteAt([]byte{status}, req.Status); err != nil {
		d.log.Error("write virtio-blk status", "err", err) // ParseRequest checked it
		return n, nil
	}
	return n + 1, nil
}

// run executes a parsed request once the rate limit allows it and the
// disk is not quiesced: a request waiting for tokens holds up no Quiesce.
func (d *Disk) run(ctx context.Context, req Request) (written uint32, moved uint64, err error) {
	d.throttle(ctx, req)
	if !d.gate.enter(ctx) {
		return 0, 0, ctx.Err()
	}
	defer d.gate.leave()
	return d.execute(ctx, req)
}

// execute performs a parsed request and returns the bytes it wrote into
// guest buffers and the bytes it moved to or from the image.
func (d *Disk) execute(ctx context.Context, req Request) (written uint32, moved uint64, err error) {
	switch req.Type {
	case TypeIn:
		n, err := d.transfer(unix.Preadv, req.Data, req.Sector)
		return uint32(n), uint64(n), err
	case TypeOut:
		if d.readOnly {
			return 0, 0, ErrReadOnly
		}
		n, err := d.transfer(unix.Pwritev, req.Data, req.Sector)
		if err != nil {
			return 0, uint64(n), err
		}
		return 0, uint64(n), d.stabilize()
	case TypeFlush:
		return 0, 0, d.sync()
	case TypeGetID:
		n, err := d.getID(req.Data)
		return n, 0, err
	case TypeDiscard, TypeWriteZeroes:
		if d.readOnly {
			return 0, 0, ErrReadOnly
		}
		for _, r := range req.Ranges {
			if err := d.deallocate(ctx, req.Type, r); err != nil {
				return 0, 0, err
			}
		}
		return 0, 0, d.stabilize()
	}
	return 0, 0, ErrUnsupported
}

func (d *Disk) sync() error {
	if err := d.syncErr.Load(); err != nil {
		return *err
	}
	if err := d.datasync(d.fd); err != nil {
		err = fmt.Errorf("fdatasync: %w (writes may be lost: every later flush of this disk fails)", err)
		if d.syncErr.CompareAndSwap(nil, &err) {
			d.log.Error("the disk's image failed to sync", "err", err)
		}
		return *d.syncErr.Load()
	}
	return nil
}

// stabilize syncs a completed write when the driver has no FLUSH.
func (d *Disk) stabilize() error {
	if d.writeThrough {
		return d.sync()
	}
	return nil
}

// transfer runs preadv or pwritev between the image at sector and the
// guest buffers, without an intermediate copy, until all bytes moved.
func (d *Disk) transfer(op func(int, [][]byte, int64) (int, error), bufs []queue.Buffer, sector uint64) (int, error) {
	iovs, want, err := iov.Append(make([][]byte, 0, len(bufs)), d.mem, bufs)
	if err != nil {
		return 0, err
	}
	// ParseRequest bounded the sector by the capacity.
	n, err := iov.TransferAt(op, d.fd, iovs, int64(sector*SectorSize))
	if err == nil && n < want {
		err = io.ErrUnexpectedEOF // the image shrank under us
	}
	return n, err
}

// getID writes the zero-padded serial into the data buffers.
func (d *Disk) getID(data []queue.Buffer) (uint32, error) {
	src := d.serial[:]
	n := 0
	for _, b := range data {
		chunk := src[n:min(len(src), n+int(b.Len))]
		if err := d.mem.WriteAt(chunk, b.Addr); err != nil {
			return uint32(n), err
		}
		if n += len(chunk); n == len(src) {
			break
		}
	}
	return uint32(n), nil
}

// deallocate discards or zeroes a range with fallocate, a chunk at a
// time: zeroing can write every byte (a block device without an offload),
// so between chunks it steps aside for Quiesce and stops when ctx ends.
func (d *Disk) deallocate(ctx context.Context, typ uint32, r Range) error {
	off, end := int64(r.Sector*SectorSize), int64(r.Sector+uint64(r.Sectors))*SectorSize
	for ; off < end; off += zeroChunk {
		if err := d.gate.yield(ctx); err != nil {
			return err
		}
		if err := d.fallocateRange(typ, r.Unmap, off, min(zeroChunk, end-off)); err != nil {
			return err
		}
	}
	return nil
}

// fallocateRange discards or zeroes n bytes at off. Write zeroes prefers
// ZERO_RANGE, which keeps the blocks, unless the driver allowed
// unmapping; a punched hole reads as zeroes too, so it is the fallback.
func (d *Disk) fallocateRange(typ uint32, unmap bool, off, n int64) error {
	const punch = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	if typ == TypeWriteZeroes && !unmap {
		err := d.fallocate(d.fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return wrapFallocate(err)
		}
	}
	return wrapFallocate(d.fallocate(d.fd, punch, off, n))
}

func wrapFallocate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%w: fallocate: %w", ErrUnsupported, err)
	}
	return fmt.Errorf("fallocate: %w", err)
}
