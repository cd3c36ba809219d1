package measure

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Hist is one hist trigger on a tracepoint: hits counted by key fields.
type Hist struct {
	Event string   // "kvm/kvm_exit"
	Keys  []string // fields of the event, e.g. "port", "rw"
}

func (h Hist) spec() string { return "hist:keys=" + strings.Join(h.Keys, ",") + ":size=4096" }

// Counts maps the key fields' values, joined by ",", to hits.
type Counts map[string]uint64

// Total is the sum of every count.
func (c Counts) Total() uint64 {
	var n uint64
	for _, v := range c {
		n += v
	}
	return n
}

// Tracing is the host kernel's tracefs.
type Tracing struct{ Dir string }

// FindTracing returns the mounted tracefs, or says why there is none.
func FindTracing() (Tracing, error) {
	for _, d := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(filepath.Join(d, "events", "kvm")); err == nil {
			return Tracing{d}, nil
		}
	}
	return Tracing{}, errors.New("measure: no tracefs with kvm events (mount tracefs on /sys/kernel/tracing as root, with kvm loaded)")
}

// Start attaches h afresh, its counts at zero.
func (t Tracing) Start(h Hist) error {
	t.Stop(h)
	return t.write(h, h.spec())
}

// Stop removes h; one that is not attached is no error.
func (t Tracing) Stop(h Hist) { _ = t.write(h, "!"+h.spec()) }

func (t Tracing) write(h Hist, s string) error {
	f, err := os.OpenFile(filepath.Join(t.Dir, "events", h.Event, "trigger"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("measure: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		return fmt.Errorf("measure: %s trigger %q: %w", h.Event, s, err)
	}
	return nil
}

// Read returns h's counts so far.
func (t Tracing) Read(h Hist) (Counts, error) {
	f, err := os.Open(filepath.Join(t.Dir, "events", h.Event, "hist"))
	if err != nil {
		return nil, fmt.Errorf("measure: %w", err)
	}
	defer f.Close()
	return ParseHist(f, h.Keys)
}

// ParseHist reads a hist file: lines such as
// "{ port:       1016, rw:          1 } hitcount:         42".
func ParseHist(r io.Reader, keys []string) (Counts, error) {
	c := Counts{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		inner, rest, ok := strings.Cut(line[1:], "}")
		if !ok {
			return nil, fmt.Errorf("measure: hist line %q", line)
		}
		var vals []string
		for i, kv := range strings.Split(inner, ",") {
			k, v, ok := strings.Cut(kv, ":")
			if !ok || i >= len(keys) || strings.TrimSpace(k) != keys[i] {
				return nil, fmt.Errorf("measure: hist line %q: want keys %v", line, keys)
			}
			vals = append(vals, strings.TrimSpace(v))
		}
		f := strings.Fields(rest)
		if len(f) < 2 || f[0] != "hitcount:" {
			return nil, fmt.Errorf("measure: hist line %q: no hitcount", line)
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("measure: hist line %q: %w", line, err)
		}
		c[strings.Join(vals, ",")] += n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("measure: %w", err)
	}
	return c, nil
}
