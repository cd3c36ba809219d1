package balloon

import (
	"time"

	"github.com/gvmm-dev/gvmm/internal/metrics"
)

// CollectMetrics implements metrics.Source: the balloon's size and the
// statistics the guest last sent. It does not ask for fresh ones, so a
// scrape never waits on the guest; BalloonStats does.
func (b *Balloon) CollectMetrics(s metrics.Sink) {
	s.Gauge("gvmm_balloon_target_bytes", "The balloon size the host asked for.", float64(b.Target()))
	s.Gauge("gvmm_balloon_actual_bytes", "The balloon size the guest reports.", float64(b.Actual()))
	stats, at, ok := b.Stats()
	if !ok {
		return
	}
	s.Gauge("gvmm_balloon_stats_age_seconds", "Time since the guest last sent its memory statistics.", time.Since(at).Seconds())
	for name, v := range stats {
		s.Gauge("gvmm_guest_memory_stat", "The guest's memory statistics as it last sent them (virtio-balloon): sizes in bytes, swap in pages, faults as counts.", float64(v), metrics.L("stat", name))
	}
}

var _ metrics.Source = (*Balloon)(nil)
