package guest

import (
	"bytes"
	"strings"
	"sync"
	"time"
)

// reportPrefix starts every Report line.
const reportPrefix = "GVMMTEST "

// Recorder is the host side of Report: an io.Writer for a VMM's output
// that keeps all of it and collects the report lines as they arrive, so
// a test can wait for one while the guest runs.
type Recorder struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	reports map[string][]string
	first   map[string]time.Time // when each key was first reported
}

func (r *Recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all.Write(p)
	r.partial = append(r.partial, p...)
	for {
		i := bytes.IndexByte(r.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(r.partial[:i]), "\r")
		r.partial = r.partial[i+1:]
		// Kernel messages may precede a report on its line.
		if j := strings.Index(line, reportPrefix); j >= 0 {
			k, v, _ := strings.Cut(line[j+len(reportPrefix):], "=")
			if r.reports == nil {
				r.reports = map[string][]string{}
				r.first = map[string]time.Time{}
			}
			if _, ok := r.first[k]; !ok {
				r.first[k] = time.Now()
			}
			r.reports[k] = append(r.reports[k], v)
		}
	}
	return len(p), nil
}

// Values returns the values reported for key so far, in order.
func (r *Recorder) Values(key string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reports[key]...)
}

// FirstAt returns when key was first reported (as the line arrived).
func (r *Recorder) FirstAt(key string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.first[key]
	return t, ok
}

// Has tells whether key was reported.
func (r *Recorder) Has(key string) bool { return len(r.Values(key)) > 0 }

// String returns everything written so far.
func (r *Recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.all.String()
}
