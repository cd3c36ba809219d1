package vsock

import (
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/internal/metrics/metricstest"
)

func TestMetricsCountTraffic(t *testing.T) {
	r := newRig(t, Options{})
	r.postRx(16)
	l := listen(t, r, 1234)
	r.connect(t, 5000, 1234) // REQUEST in, RESPONSE out
	c := accept(t, l)
	r.send(t, hdr(OpRW, 5000, 1234), []byte("hello")) // RW in
	_, err := io.ReadFull(c, make([]byte, 5))
	require.NoError(t, err)
	go c.Write([]byte("world!")) // RW out
	_, data := r.recv(t)
	require.Equal(t, "world!", string(data))
	// A packet from another CID is dropped.
	spoofed := hdr(OpRW, 5000, 1234)
	spoofed.SrcCID = guestCID + 1
	r.send(t, spoofed, nil)
	r.expectQuiet(t)

	s := metricstest.Collect(r.d)
	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"gvmm_vsock_bytes_total", []string{"direction", "tx"}, 5},
		{"gvmm_vsock_bytes_total", []string{"direction", "rx"}, 6},
		{"gvmm_vsock_packets_total", []string{"direction", "tx"}, 3},
		{"gvmm_vsock_packets_total", []string{"direction", "rx"}, 2},
		{"gvmm_vsock_dropped_packets_total", nil, 1},
		{"gvmm_vsock_connections", nil, 1},
		{"gvmm_vsock_accepted_connections_total", nil, 1},
		{"gvmm_vsock_refused_total", nil, 0},
		{"gvmm_vsock_credit_resets_total", nil, 0},
	}
	for _, tt := range tests {
		key := metricstest.Key(tt.name, tt.labels...)
		got, ok := s.Get(tt.name, tt.labels...)
		if assert.True(t, ok, key) {
			assert.Equal(t, tt.want, got.Value, key)
		}
	}
	assert.Len(t, s, len(tests), "nothing else is reported")
}
