package net

import (
	"github.com/gvmm-dev/gvmm/internal/metrics"
	"github.com/gvmm-dev/gvmm/internal/ratelimit"
)

// CollectMetrics implements metrics.Source.
func (d *Device) CollectMetrics(s metrics.Sink) {
	st := d.Stats()
	tx, rx := metrics.L("direction", "tx"), metrics.L("direction", "rx")
	const (
		bytesHelp     = "Ethernet payload bytes: tx from the guest to the TAP, rx from the TAP to the guest."
		packetsHelp   = "Frames: tx from the guest to the TAP, rx from the TAP to the guest."
		droppedHelp   = "Frames dropped: tx refused as malformed or by the TAP, rx too large for the guest's buffers or chains the device could not use."
		throttledHelp = "Frames held back by the device's rate limit."
		waitedHelp    = "Time frames were held back by the device's rate limit."
	)
	s.Counter("gvmm_net_bytes_total", bytesHelp, float64(st.TxBytes), tx)
	s.Counter("gvmm_net_bytes_total", bytesHelp, float64(st.RxBytes), rx)
	s.Counter("gvmm_net_packets_total", packetsHelp, float64(st.TxFrames), tx)
	s.Counter("gvmm_net_packets_total", packetsHelp, float64(st.RxFrames), rx)
	s.Counter("gvmm_net_dropped_packets_total", droppedHelp, float64(st.TxDropped), tx)
	s.Counter("gvmm_net_dropped_packets_total", droppedHelp, float64(st.RxDropped), rx)
	for _, l := range []struct {
		dir metrics.Label
		lim *ratelimit.Limiter
	}{{tx, d.txLimit}, {rx, d.rxLimit}} {
		throttled, waited := l.lim.Throttled()
		s.Counter("gvmm_net_throttled_packets_total", throttledHelp, float64(throttled), l.dir)
		s.Counter("gvmm_net_throttled_seconds_total", waitedHelp, waited.Seconds(), l.dir)
	}
}

var _ metrics.Source = (*Device)(nil)
