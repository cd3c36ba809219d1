package vsock

import "github.com/gvmm-dev/gvmm/internal/metrics"

// CollectMetrics implements metrics.Source.
func (d *Device) CollectMetrics(s metrics.Sink) {
	st := d.Stats()
	tx, rx := metrics.L("direction", "tx"), metrics.L("direction", "rx")
	const bytesHelp = "vsock stream bytes: tx from the guest to the host, rx from the host to the guest."
	const packetsHelp = "vsock packets: tx from the guest (dropped ones included), rx to the guest."
	s.Counter("gvmm_vsock_bytes_total", bytesHelp, float64(st.TxBytes), tx)
	s.Counter("gvmm_vsock_bytes_total", bytesHelp, float64(st.RxBytes), rx)
	s.Counter("gvmm_vsock_packets_total", packetsHelp, float64(st.TxPackets), tx)
	s.Counter("gvmm_vsock_packets_total", packetsHelp, float64(st.RxPackets), rx)
	s.Counter("gvmm_vsock_dropped_packets_total", "Guest vsock packets dropped as malformed or not from the guest's CID.", float64(st.Dropped))
	s.Gauge("gvmm_vsock_connections", "vsock connections open now.", float64(st.Conns))
	s.Counter("gvmm_vsock_accepted_connections_total", "vsock connections established, either way.", float64(st.Accepted))
	s.Counter("gvmm_vsock_refused_total", "vsock requests and stray packets answered with a reset, either way.", float64(st.Refused))
	s.Counter("gvmm_vsock_credit_resets_total", "vsock connections reset for sending past their credit.", float64(st.CreditAbuse))
}

var _ metrics.Source = (*Device)(nil)
