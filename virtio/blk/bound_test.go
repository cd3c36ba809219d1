package blk

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

// slowFallocate makes fallocate take time in proportion to its length, as
// zeroing a block device without a write-zeroes offload does, and records
// every call.
type slowFallocate struct {
	perMiB time.Duration
	mu     sync.Mutex
	calls  []int64 // lengths
	first  chan struct{}
}

func (s *slowFallocate) install(d *Disk) {
	s.first = make(chan struct{})
	real := d.fallocate
	d.fallocate = func(fd int, mode uint32, off, n int64) error {
		s.mu.Lock()
		s.calls = append(s.calls, n)
		if len(s.calls) == 1 {
			close(s.first)
		}
		s.mu.Unlock()
		time.Sleep(time.Duration(n>>20) * s.perMiB)
		return real(fd, mode, off, n)
	}
}

func (s *slowFallocate) bytes() (calls int, total int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.calls {
		total += n
	}
	return len(s.calls), total
}

// largestZeroes is the largest write-zeroes request the device accepts:
// every segment it advertises, each as long as it advertises.
func largestZeroes(t *testing.T, r *rig) []byte {
	segs := r.drv.ReadDeviceConfig(cfgMaxWriteZeroesSeg, 4)
	sectors := r.drv.ReadDeviceConfig(cfgMaxWriteZeroesSectors, 4)
	require.NotZero(t, segs)
	require.NotZero(t, sectors)
	var ranges [][3]uint64
	for i := range segs {
		ranges = append(ranges, [3]uint64{i * sectors, sectors, 0})
	}
	return rangeBytes(ranges...)
}

// sparseRig is a rig on a sparse image of 64 GiB.
func sparseRig(t *testing.T) *rig {
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(64<<30))
	require.NoError(t, f.Close())
	return startRig(t, path, Options{}, linuxFeatures, nil)
}

// A write-zeroes request over a large range must not keep a Stop (a
// device reset) waiting until all of it is done.
func TestResetInterruptsWriteZeroes(t *testing.T) {
	r := sparseRig(t)
	slow := &slowFallocate{perMiB: 100 * time.Microsecond}
	slow.install(r.disk)
	q := r.drv.Queues[0]
	q.AddChain([]virtiotest.Buf{{Data: header(TypeWriteZeroes, 0)}, {Data: largestZeroes(t, r)}, {Len: 1, Write: true}})
	r.drv.Kick(0)
	select {
	case <-slow.first:
	case <-time.After(waitFor):
		t.Fatal("the write-zeroes did not start")
	}
	callsAtStop, _ := slow.bytes()
	start := time.Now()
	r.drv.SetStatus(0)
	took := time.Since(start)
	calls, total := slow.bytes()
	assert.Less(t, took, 500*time.Millisecond, "the reset waited for the write-zeroes")
	assert.LessOrEqual(t, calls-callsAtStop, 1, "fallocate calls after the reset")
	assert.LessOrEqual(t, total, int64(2*zeroChunk), "bytes zeroed in all")
	assert.Empty(t, q.Used(), "an interrupted request completed")
}

// Quiesce (Pause) does not wait for the rest of a long write-zeroes: the
// request goes on after Release and completes.
func TestQuiesceInterruptsWriteZeroes(t *testing.T) {
	r := sparseRig(t)
	slow := &slowFallocate{perMiB: 100 * time.Microsecond}
	slow.install(r.disk)
	q := r.drv.Queues[0]
	q.AddChain([]virtiotest.Buf{{Data: header(TypeWriteZeroes, 0)}, {Data: largestZeroes(t, r)}, {Len: 1, Write: true}})
	r.drv.Kick(0)
	<-slow.first
	start := time.Now()
	require.NoError(t, r.disk.Quiesce())
	assert.Less(t, time.Since(start), 500*time.Millisecond, "Quiesce waited for the write-zeroes")
	callsAtQuiesce, _ := slow.bytes()
	time.Sleep(50 * time.Millisecond)
	calls, _ := slow.bytes()
	assert.Equal(t, callsAtQuiesce, calls, "fallocate ran while quiesced")
	assert.Empty(t, q.Used(), "the request completed while quiesced")

	r.disk.Release()
	require.True(t, r.msi.Wait(0, waitFor), "the write-zeroes did not complete after Release")
	used := q.Used()
	require.Len(t, used, 1)
	_, total := slow.bytes()
	assert.Equal(t, int64(maxRangeSegments)*maxRangeSectors*SectorSize, total, "every sector zeroed once")
}
