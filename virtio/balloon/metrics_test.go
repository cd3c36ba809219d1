package balloon

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/internal/metrics/metricstest"
)

func TestMetrics(t *testing.T) {
	r := newRig(t, allFeatures)
	require.NoError(t, r.b.SetTarget(8<<20))
	s := metricstest.Collect(r.b)
	assert.Len(t, s, 2, "sizes only until the guest sends statistics: %v", s)
	target, ok := s.Get("gvmm_balloon_target_bytes")
	require.True(t, ok)
	assert.Equal(t, float64(8<<20), target.Value)
	actual, ok := s.Get("gvmm_balloon_actual_bytes")
	require.True(t, ok)
	assert.Zero(t, actual.Value)

	r.offerStats(t, statEntries(TagFreeMemory, 100<<20, TagMajorFaults, 3))
	require.Eventually(t, func() bool { _, _, ok := r.b.Stats(); return ok }, waitFor, time.Millisecond)
	s = metricstest.Collect(r.b)
	for stat, want := range map[string]float64{"free_memory": 100 << 20, "major_faults": 3} {
		got, ok := s.Get("gvmm_guest_memory_stat", "stat", stat)
		if assert.True(t, ok, stat) {
			assert.Equal(t, want, got.Value, stat)
		}
	}
	age, ok := s.Get("gvmm_balloon_stats_age_seconds")
	require.True(t, ok)
	assert.GreaterOrEqual(t, age.Value, 0.0)
	assert.Less(t, age.Value, waitFor.Seconds())
}
