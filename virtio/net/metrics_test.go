package net

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gvmm-dev/gvmm/internal/metrics/metricstest"
	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

func TestMetricsCountTraffic(t *testing.T) {
	r := newRig(t, linuxFeatures, Limits{TX: Limit{Packets: ratelimit.Bucket{Rate: 10, Burst: 1}}})
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
	// One token at once, then one per 100 ms: the second and third
	// frames wait, unless the test was descheduled for the token's
	// 100 ms between two sends (a loaded machine), which one may escape.
	throttled, ok := s.Get("gvmm_net_throttled_packets_total", "direction", "tx")
	if assert.True(t, ok) {
		assert.InDelta(t, 2, throttled.Value, 1)
	}
	waited, ok := s.Get("gvmm_net_throttled_seconds_total", "direction", "tx")
	if assert.True(t, ok) {
		assert.Positive(t, waited.Value)
	}
	assert.Len(t, s, len(tests)+2, "nothing else is reported")
}
