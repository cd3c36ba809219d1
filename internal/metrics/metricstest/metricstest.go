// Package metricstest records what a metrics.Source reports, for device
// tests.
package metricstest

import (
	"slices"
	"strings"

	"github.com/gvmm-dev/gvmm/internal/metrics"
)

// Sample is one reported value.
type Sample struct {
	Kind      string // "counter", "gauge" or "histogram"
	Name      string
	Labels    []metrics.Label
	Value     float64 // a histogram's count
	Histogram metrics.HistogramSnapshot
}

// Samples are what one collection reported, in order.
type Samples []Sample

// Collect runs src's collection once.
func Collect(src metrics.Source) Samples {
	var r recorder
	src.CollectMetrics(&r)
	return r.s
}

// Get returns the sample of name whose labels are exactly labels, given
// as name, value pairs; ok is false if there is none.
func (s Samples) Get(name string, labels ...string) (Sample, bool) {
	want := Key(name, labels...)
	for _, x := range s {
		if x.Key() == want {
			return x, true
		}
	}
	return Sample{}, false
}

// Key names a sample as Prometheus' text format does, labels sorted:
// gvmm_disk_requests_total{op="read"}.
func Key(name string, labels ...string) string {
	var ls []metrics.Label
	for i := 0; i+1 < len(labels); i += 2 {
		ls = append(ls, metrics.L(labels[i], labels[i+1]))
	}
	return Sample{Name: name, Labels: ls}.Key()
}

// Key names the sample as the package-level Key does.
func (x Sample) Key() string {
	parts := make([]string, len(x.Labels))
	for i, l := range x.Labels {
		parts[i] = l.Name + `="` + l.Value + `"`
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return x.Name
	}
	return x.Name + "{" + strings.Join(parts, ",") + "}"
}

type recorder struct{ s Samples }

func (r *recorder) Counter(name, _ string, v float64, labels ...metrics.Label) {
	r.s = append(r.s, Sample{Kind: "counter", Name: name, Labels: labels, Value: v})
}

func (r *recorder) Gauge(name, _ string, v float64, labels ...metrics.Label) {
	r.s = append(r.s, Sample{Kind: "gauge", Name: name, Labels: labels, Value: v})
}

func (r *recorder) Histogram(name, _ string, h metrics.HistogramSnapshot, labels ...metrics.Label) {
	r.s = append(r.s, Sample{Kind: "histogram", Name: name, Labels: labels, Value: float64(h.Count), Histogram: h})
}
