package blk

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/internal/metrics/metricstest"
)

func TestMetricsCountRequests(t *testing.T) {
	r := newRig(t, Options{}, linuxFeatures)
	require.Equal(t, byte(StatusOK), r.submit(t, TypeOut, 0, [][]byte{make([]byte, 1024)}).status)
	require.Equal(t, byte(StatusOK), r.submit(t, TypeIn, 0, nil, 512, 1536).status)
	require.Equal(t, byte(StatusOK), r.submit(t, TypeIn, 4, nil, 512).status)
	require.Equal(t, byte(StatusOK), r.submit(t, TypeFlush, 0, nil).status)
	require.Equal(t, byte(StatusIOErr), r.submit(t, TypeIn, diskBytes/512, nil, 512).status)
	require.Equal(t, byte(StatusUnsupported), r.submit(t, 99, 0, nil).status)

	s := metricstest.Collect(r.disk)
	tests := []struct {
		name, op string
		want     float64
	}{
		{"gvmm_disk_requests_total", "read", 3},
		{"gvmm_disk_requests_total", "write", 1},
		{"gvmm_disk_requests_total", "flush", 1},
		{"gvmm_disk_requests_total", "discard", 0},
		{"gvmm_disk_requests_total", "other", 1},
		{"gvmm_disk_errors_total", "read", 1},
		{"gvmm_disk_errors_total", "write", 0},
		{"gvmm_disk_errors_total", "other", 1},
		{"gvmm_disk_bytes_total", "read", 2560},
		{"gvmm_disk_bytes_total", "write", 1024},
	}
	for _, tt := range tests {
		got, ok := s.Get(tt.name, "op", tt.op)
		if assert.True(t, ok, "%s{op=%q}", tt.name, tt.op) {
			assert.Equal(t, tt.want, got.Value, "%s{op=%q}", tt.name, tt.op)
		}
	}
	h, ok := s.Get("gvmm_disk_request_duration_seconds")
	require.True(t, ok)
	assert.Equal(t, uint64(6), h.Histogram.Count, "every completed request is timed")
	assert.Positive(t, h.Histogram.SumSeconds)
	_, ok = s.Get("gvmm_disk_bytes_total", "op", "flush")
	assert.False(t, ok, "bytes only for reads and writes")
}
