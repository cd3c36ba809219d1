package blk

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/ratelog"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

const (
	waitFor   = 5 * time.Second
	ringBase  = 0x100000
	diskBytes = 1 << 20
	// linuxFeatures is what Linux 6.1's virtio_blk accepts of our offer.
	linuxFeatures = virtio.FeatureVersion1 | virtio.FeatureIndirectDesc | FeatureSizeMax | FeatureSegMax |
		FeatureBlkSize | FeatureFlush | FeatureDiscard | FeatureWriteZeroes
)

var quiet = slog.New(slog.DiscardHandler)

// pattern is the initial contents of a test image: no two sectors alike.
func pattern(n int) []byte {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	return data
}

// newImage writes a disk image of n pattern bytes.
func newImage(t testing.TB, n int) (string, []byte) {
	t.Helper()
	data := pattern(n)
	path := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path, data
}

// rig is a disk behind the real PCI transport, driven by the mock driver.
type rig struct {
	disk  *Disk
	fn    *virtio.PCIDevice
	drv   *virtiotest.PCIDriver
	msi   *virtiotest.MSI
	path  string
	syncs atomic.Int32
	// failSyncs is how many of the next fdatasyncs fail with EIO.
	failSyncs atomic.Int32
	// gate, if set, holds every fdatasync until it is closed.
	gate chan struct{}
}

func newRig(t testing.TB, opts Options, features uint64) *rig {
	t.Helper()
	path, _ := newImage(t, diskBytes)
	return startRig(t, path, opts, features, nil)
}

func startRig(t testing.TB, path string, opts Options, features uint64, gate chan struct{}) *rig {
	t.Helper()
	if opts.Log == nil {
		opts.Log = quiet
	}
	d, err := Open(path, opts)
	require.NoError(t, err)
	r := &rig{disk: d, path: path, msi: virtiotest.NewMSI(), gate: gate}
	d.datasync = func(fd int) error {
		if r.gate != nil {
			<-r.gate
		}
		r.syncs.Add(1)
		if r.failSyncs.Add(-1) >= 0 {
			return unix.EIO
		}
		return unix.Fdatasync(fd)
	}
	mem := virtiotest.NewMemory(8 << 20)
	r.fn, err = virtio.NewPCI(d, virtio.PCIOptions{Mem: mem, MSI: r.msi, Log: quiet})
	require.NoError(t, err)
	r.drv, err = virtiotest.NewPCIDriver(r.fn, mem)
	require.NoError(t, err)
	require.NoError(t, r.drv.Start(features, ringBase))
	t.Cleanup(func() {
		r.drv.SetStatus(0)
		assert.NoError(t, r.fn.Close())
		assert.NoError(t, d.Close())
	})
	return r
}

// result is a completed request as the driver sees it.
type result struct {
	status byte
	used   uint32
	data   []byte // the writable data buffers, concatenated
}

// submit sends one request: header, readable data, then writable data
// buffers of the given lengths and the status byte.
func (r *rig) submit(t testing.TB, typ uint32, sector uint64, out [][]byte, in ...uint32) result {
	t.Helper()
	bufs := []virtiotest.Buf{{Data: header(typ, sector)}}
	for _, b := range out {
		bufs = append(bufs, virtiotest.Buf{Data: b})
	}
	for _, n := range in {
		bufs = append(bufs, virtiotest.Buf{Len: n, Write: true})
	}
	bufs = append(bufs, virtiotest.Buf{Len: 1, Write: true})
	return r.send(t, bufs)
}

func (r *rig) send(t testing.TB, bufs []virtiotest.Buf) result {
	t.Helper()
	q := r.drv.Queues[0]
	head, addrs := q.AddChain(bufs)
	r.drv.Kick(0)
	require.True(t, r.msi.Wait(0, waitFor), "no completion interrupt")
	used := q.Used()
	require.Len(t, used, 1)
	require.Equal(t, uint32(head), used[0].ID)
	var res result
	res.used = used[0].Len
	for i, b := range bufs[:len(bufs)-1] {
		if b.Write {
			res.data = append(res.data, q.Read(addrs[i], int(b.Len))...)
		}
	}
	if last := bufs[len(bufs)-1]; last.Write {
		res.status = q.Read(addrs[len(addrs)-1]+memory.GuestAddress(last.Len-1), 1)[0]
	}
	return res
}

func TestReadWriteRoundTrip(t *testing.T) {
	r := newRig(t, Options{}, linuxFeatures)
	a, b := bytes.Repeat([]byte{0xaa}, 512), bytes.Repeat([]byte{0xbb}, 1024)
	res := r.submit(t, TypeOut, 3, [][]byte{a, b})
	assert.Equal(t, result{status: StatusOK, used: 1}, res)

	res = r.submit(t, TypeIn, 2, nil, 512, 1536, 512)
	assert.Equal(t, byte(StatusOK), res.status)
	assert.Equal(t, uint32(2560+1), res.used, "data plus status byte")
	orig := pattern(diskBytes)
	want := append(append(append([]byte{}, orig[1024:1536]...), a...), b...)
	want = append(want, orig[3072:3584]...)
	assert.Equal(t, want, res.data)

	onDisk, err := os.ReadFile(r.path)
	require.NoError(t, err)
	assert.Equal(t, append(a, b...), onDisk[1536:3072])
	assert.Zero(t, r.syncs.Load(), "writes and reads do not sync when the driver can flush")
}

func TestFlushWaitsForFdatasync(t *testing.T) {
	path, _ := newImage(t, diskBytes)
	gate := make(chan struct{})
	r := startRig(t, path, Options{}, linuxFeatures, gate)
	q := r.drv.Queues[0]
	head, addrs := q.AddChain([]virtiotest.Buf{{Data: header(TypeFlush, 0)}, {Len: 1, Write: true}})
	require.NoError(t, r.disk.mem.WriteAt([]byte{0xff}, addrs[1]))
	r.drv.Kick(0)
	assert.False(t, r.msi.Wait(0, 100*time.Millisecond), "completed before fdatasync returned")
	assert.Empty(t, q.Used())
	close(gate)
	require.True(t, r.msi.Wait(0, waitFor))
	assert.Equal(t, []virtiotest.Used{{ID: uint32(head), Len: 1}}, q.Used())
	assert.Equal(t, byte(StatusOK), q.Read(addrs[1], 1)[0])
	assert.Equal(t, int32(1), r.syncs.Load())
}

func TestWriteThroughWithoutFlush(t *testing.T) {
	r := newRig(t, Options{}, virtio.FeatureVersion1)
	assert.Equal(t, byte(StatusOK), r.submit(t, TypeOut, 0, [][]byte{make([]byte, 512)}).status)
	assert.Equal(t, int32(1), r.syncs.Load(), "each write is stable on completion")
	r.submit(t, TypeIn, 0, nil, 512)
	assert.Equal(t, int32(1), r.syncs.Load(), "reads never sync")
}

// Linux reports a lost write to the next fdatasync only: the disk
// remembers it, so that no later flush or write-through write tells the
// guest its data is safe.
func TestSyncErrorIsSticky(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		stable   func(t *testing.T, r *rig) result // a request that must make data stable
	}{
		{"flush", linuxFeatures, func(t *testing.T, r *rig) result { return r.submit(t, TypeFlush, 0, nil) }},
		{"write-through", virtio.FeatureVersion1, func(t *testing.T, r *rig) result { return r.submit(t, TypeOut, 0, [][]byte{make([]byte, 512)}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Options{}, tc.features)
			r.failSyncs.Store(1)
			assert.Equal(t, byte(StatusIOErr), tc.stable(t, r).status, "the failed sync")
			for range 2 {
				assert.Equal(t, byte(StatusIOErr), tc.stable(t, r).status, "a later sync, which fdatasync alone would pass")
			}
			assert.Equal(t, int32(1), r.syncs.Load(), "fdatasync is not asked again")
			assert.Equal(t, byte(StatusOK), r.submit(t, TypeIn, 0, nil, 512).status, "reads go on")
		})
	}
}

func TestGetID(t *testing.T) {
	r := newRig(t, Options{Serial: "gvmm-disk-1"}, linuxFeatures)
	res := r.submit(t, TypeGetID, 0, nil, 20)
	assert.Equal(t, byte(StatusOK), res.status)
	assert.Equal(t, uint32(21), res.used)
	assert.Equal(t, append([]byte("gvmm-disk-1"), make([]byte, 9)...), res.data)
}

func blocks(t *testing.T, path string) int64 {
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	return st.Blocks
}

func TestDiscardPunchesHole(t *testing.T) {
	r := newRig(t, Options{}, linuxFeatures)
	before := blocks(t, r.path)
	res := r.submit(t, TypeDiscard, 0, [][]byte{rangeBytes([3]uint64{0, 512, 0}, [3]uint64{1024, 256, 0})})
	assert.Equal(t, byte(StatusOK), res.status)
	after := blocks(t, r.path)
	assert.Less(t, after, before-512, "st_blocks (512-byte units) dropped by about 384 KiB")
	fi, err := os.Stat(r.path)
	require.NoError(t, err)
	assert.Equal(t, int64(diskBytes), fi.Size(), "the image keeps its size")
	res = r.submit(t, TypeIn, 0, nil, 4096)
	assert.Equal(t, make([]byte, 4096), res.data)
}

func TestWriteZeroes(t *testing.T) {
	tests := []struct {
		name  string
		unmap uint64
	}{{"zero range", 0}, {"unmap", 1}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, Options{}, linuxFeatures)
			before := blocks(t, r.path)
			res := r.submit(t, TypeWriteZeroes, 0, [][]byte{rangeBytes([3]uint64{8, 256, tt.unmap})})
			assert.Equal(t, byte(StatusOK), res.status)
			res = r.submit(t, TypeIn, 7, nil, 512*258)
			orig := pattern(diskBytes)
			want := append(append(append([]byte{}, orig[7*512:8*512]...), make([]byte, 256*512)...), orig[264*512:265*512]...)
			assert.Equal(t, want, res.data)
			if tt.unmap == 1 {
				assert.Less(t, blocks(t, r.path), before)
			}
		})
	}
}

func TestReadOnlyDisk(t *testing.T) {
	r := newRig(t, Options{ReadOnly: true}, virtio.FeatureVersion1|FeatureFlush)
	offered := r.drv.DeviceFeatures()
	assert.NotZero(t, offered&FeatureRO)
	assert.Zero(t, offered&(FeatureDiscard|FeatureWriteZeroes))
	tests := []struct {
		name string
		typ  uint32
		out  [][]byte
		want byte
	}{
		{"write", TypeOut, [][]byte{make([]byte, 512)}, StatusIOErr},
		{"discard", TypeDiscard, [][]byte{rangeBytes([3]uint64{0, 8, 0})}, StatusIOErr},
		{"write zeroes", TypeWriteZeroes, [][]byte{rangeBytes([3]uint64{0, 8, 0})}, StatusIOErr},
		{"flush", TypeFlush, nil, StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, r.submit(t, tt.typ, 0, tt.out).status)
		})
	}
	orig := pattern(diskBytes)
	onDisk, err := os.ReadFile(r.path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(orig, onDisk), "image unchanged")
	res := r.submit(t, TypeIn, 0, nil, 512)
	assert.Equal(t, byte(StatusOK), res.status)
	assert.Equal(t, orig[:512], res.data)
}

func TestBadRequestsComplete(t *testing.T) {
	r := newRig(t, Options{}, linuxFeatures)
	tests := []struct {
		name string
		typ  uint32
		sec  uint64
		out  [][]byte
		in   []uint32
		want result
	}{
		{"read past the end", TypeIn, diskBytes/512 - 1, nil, []uint32{1024}, result{status: StatusIOErr, used: 1, data: make([]byte, 1024)}},
		{"write past the end", TypeOut, diskBytes / 512, [][]byte{make([]byte, 512)}, nil, result{status: StatusIOErr, used: 1}},
		{"unaligned length", TypeIn, 0, nil, []uint32{100}, result{status: StatusIOErr, used: 1, data: make([]byte, 100)}},
		{"unknown type", 99, 0, nil, nil, result{status: StatusUnsupported, used: 1}},
		{"discard with unmap", TypeDiscard, 0, [][]byte{rangeBytes([3]uint64{0, 8, 1})}, nil, result{status: StatusUnsupported, used: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, r.submit(t, tt.typ, tt.sec, tt.out, tt.in...))
		})
	}
	// A request without a status byte is returned with nothing written.
	res := r.send(t, []virtiotest.Buf{{Data: header(TypeIn, 0)}})
	assert.Equal(t, uint32(0), res.used)
	assert.Zero(t, r.drv.Status()&virtio.StatusNeedsReset)
	assert.Equal(t, byte(StatusOK), r.submit(t, TypeIn, 0, nil, 512).status, "still serving")
}

// TestBadRequestFloodLogsBounded: every bad request is answered, but a
// guest sending them without end gets a bounded number of log lines.
func TestBadRequestFloodLogsBounded(t *testing.T) {
	var log bytes.Buffer // written by the queue worker only, read after it stopped
	path, _ := newImage(t, diskBytes)
	r := startRig(t, path, Options{Log: slog.New(slog.NewTextHandler(&log, nil))}, linuxFeatures, nil)
	for i := 0; i < 200; i++ {
		require.Equal(t, byte(StatusIOErr), r.submit(t, TypeIn, diskBytes/512, nil, 512).status)
	}
	res := r.send(t, []virtiotest.Buf{{Data: header(TypeIn, 0)}}) // no status byte
	assert.Equal(t, uint32(0), res.used)
	r.drv.SetStatus(0)
	assert.LessOrEqual(t, strings.Count(log.String(), "level=WARN"), ratelog.Burst, "%s", log.String())
}

func TestBrokenChainNeedsReset(t *testing.T) {
	r := newRig(t, Options{}, linuxFeatures)
	q := r.drv.Queues[0]
	q.WriteDesc(q.Desc, 0, virtiotest.Desc{Addr: 0x200000, Len: 16, Flags: 1, Next: 0})
	q.Publish(0)
	r.drv.Kick(0)
	require.True(t, r.msi.Wait(1, waitFor), "configuration change")
	assert.NotZero(t, r.drv.Status()&virtio.StatusNeedsReset)
}

func TestEventIdxAndIndirect(t *testing.T) {
	r := newRig(t, Options{}, linuxFeatures|virtio.FeatureEventIdx)
	q := r.drv.Queues[0]
	for i := uint16(0); i < 3; i++ {
		q.SetUsedEvent(i)
		hdr := header(TypeOut, uint64(i))
		head, addrs := q.AddIndirect([]virtiotest.Buf{{Data: hdr}, {Data: bytes.Repeat([]byte{byte(i + 1)}, 512)}, {Len: 1, Write: true}})
		r.drv.Kick(0)
		require.True(t, r.msi.Wait(0, waitFor))
		assert.Equal(t, []virtiotest.Used{{ID: uint32(head), Len: 1}}, q.Used())
		assert.Equal(t, byte(StatusOK), q.Read(addrs[2], 1)[0])
		// The device asks for the next kick once it finds the ring empty,
		// which may be after the interrupt of the request it completed.
		assert.Eventually(t, func() bool { return q.AvailEvent() == i+1 }, waitFor, time.Millisecond,
			"device asks for the next kick: avail_event %d", i+1)
	}
	onDisk, err := os.ReadFile(r.path)
	require.NoError(t, err)
	assert.Equal(t, bytes.Repeat([]byte{3}, 512), onDisk[1024:1536])
}

func TestConfigSpace(t *testing.T) {
	path, _ := newImage(t, diskBytes+100)
	r := startRig(t, path, Options{}, linuxFeatures, nil)
	le := func(off uint64, n int) uint64 { return r.drv.ReadDeviceConfig(off, n) }
	assert.Equal(t, uint64(diskBytes/512), le(cfgCapacity, 4)|le(cfgCapacity+4, 4)<<32, "rounded down")
	assert.Equal(t, uint64(SizeMax), le(cfgSizeMax, 4))
	assert.Equal(t, uint64(SegMax), le(cfgSegMax, 4))
	assert.Equal(t, uint64(512), le(cfgBlkSize, 4))
	assert.Equal(t, uint64(maxRangeSectors), le(cfgMaxDiscardSectors, 4))
	assert.Equal(t, uint64(maxRangeSegments), le(cfgMaxDiscardSeg, 4))
	assert.Equal(t, uint64(8), le(cfgDiscardAlignment, 4))
	assert.Equal(t, uint64(maxRangeSectors), le(cfgMaxWriteZeroesSectors, 4))
	assert.Equal(t, uint64(maxRangeSegments), le(cfgMaxWriteZeroesSeg, 4))
	assert.Equal(t, uint64(1), le(cfgWriteZeroesMayUnmap, 1))
	assert.Equal(t, uint64(0), le(configSize, 4))
	assert.Equal(t, uint64(0x1042), cfgWord(r.fn, 2), "virtio-blk PCI device ID")
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	r.disk.WriteConfig(0, b[:]) // read-only: ignored
	assert.Equal(t, uint64(diskBytes/512), le(cfgCapacity, 4))
}

func cfgWord(fn *virtio.PCIDevice, off uint64) uint64 {
	var b [2]byte
	fn.ConfigSpace().Read(off, b[:])
	return uint64(binary.LittleEndian.Uint16(b[:]))
}

func TestOpenLocks(t *testing.T) {
	tests := []struct {
		name         string
		first, other Options
		ok           bool
	}{
		{"writable twice", Options{}, Options{}, false},
		{"read-only while writable", Options{}, Options{ReadOnly: true}, false},
		{"writable while read-only", Options{ReadOnly: true}, Options{}, false},
		{"read-only twice", Options{ReadOnly: true}, Options{ReadOnly: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, _ := newImage(t, 4096)
			tt.first.Log, tt.other.Log = quiet, quiet
			d, err := Open(path, tt.first)
			require.NoError(t, err)
			d2, err := Open(path, tt.other)
			if tt.ok {
				require.NoError(t, err)
				require.NoError(t, d2.Close())
			} else {
				assert.ErrorIs(t, err, ErrInUse)
				assert.ErrorContains(t, err, "disk image "+path+" is in use by another process")
			}
			require.NoError(t, d.Close())
			d3, err := Open(path, tt.other)
			require.NoError(t, err, "the lock goes with Close")
			require.NoError(t, d3.Close())
		})
	}
}

func TestOpenErrors(t *testing.T) {
	path, _ := newImage(t, 1000)
	d, err := Open(path, Options{Log: quiet})
	require.NoError(t, err)
	assert.Equal(t, uint64(1), d.Capacity(), "size rounded down to whole sectors")
	require.NoError(t, d.Close())
	_, err = Open(path, Options{Serial: "012345678901234567890", Log: quiet})
	assert.ErrorContains(t, err, "longer than 20 bytes")
	_, err = Open(filepath.Join(t.TempDir(), "missing.img"), Options{Log: quiet})
	assert.ErrorIs(t, err, os.ErrNotExist)
}
