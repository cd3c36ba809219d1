package blk

import "testing"

// rigRequests is how many requests the benchmark sends through one rig:
// the mock driver does not recycle descriptors, so a fresh rig (made
// with the timer stopped) takes over before its ring runs out.
const rigRequests = 64

// BenchmarkRead4K is one 4 KiB read request through the transport and
// the queue worker, from the driver's kick to its completion: the path
// the disk's counters and latency histogram sit on. The image is in the
// page cache, so the preadv is as cheap as it gets and the counting's
// share as large.
func BenchmarkRead4K(b *testing.B) {
	var r *rig
	for i := 0; b.Loop(); i++ {
		if i%rigRequests == 0 {
			b.StopTimer()
			r = newRig(b, Options{}, linuxFeatures)
			b.StartTimer()
		}
		if res := r.submit(b, TypeIn, 8, nil, 4096); res.status != StatusOK {
			b.Fatalf("status %d", res.status)
		}
	}
}
