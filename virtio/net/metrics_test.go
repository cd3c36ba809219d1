package net

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gvmm-dev/gvmm/internal/metrics/metricstest"
	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

func TestMetricsCountTraffic(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{TX: Limit{Packets: ratelimit.Bucket{Rate: 100, Burst: 1}}})
	for range 3 {
		r.send(t, virtiotest.Buf{Data: frame([HeaderSize]byte{}, []byte("hello"))})
		r.recvPeer(t)
	}
	r.send(t, virtiotest.Buf{Data: make([]byte, HeaderSize-1)}) // dropped
	r.peerQuiet(t)
	r.postRx(32, 4096) // room for a largest frame, which rx waits for
	r.inject(t, frame([HeaderSize]byte{}, []byte("world!")))
	r.rxUsed(t, 1)

	s := metricstest.Collect(r.d)
	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"gvmm_net_bytes_total", []string{"direction", "tx"}, 15},
		{"gvmm_net_bytes_total", []string{"direction", "rx"}, 6},
		{"gvmm_net_packets_total", []string{"direction", "tx"}, 3},
		{"gvmm_net_packets_total", []string{"direction", "rx"}, 1},
		{"gvmm_net_dropped_packets_total", []string{"direction", "tx"}, 1},
		{"gvmm_net_dropped_packets_total", []string{"direction", "rx"}, 0},
		// One token at once, then the second and third frames wait.
		{"gvmm_net_throttled_packets_total", []string{"direction", "tx"}, 2},
		{"gvmm_net_throttled_packets_total", []string{"direction", "rx"}, 0},
		{"gvmm_net_throttled_seconds_total", []string{"direction", "rx"}, 0},
	}
	for _, tt := range tests {
		key := metricstest.Key(tt.name, tt.labels...)
		got, ok := s.Get(tt.name, tt.labels...)
		if assert.True(t, ok, key) {
			assert.Equal(t, tt.want, got.Value, key)
		}
	}
	waited, ok := s.Get("gvmm_net_throttled_seconds_total", "direction", "tx")
	if assert.True(t, ok) {
		assert.Greater(t, waited.Value, 0.005, "two frames held about 10 ms each")
	}
	assert.Len(t, s, len(tests)+1, "nothing else is reported")
}
