package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/term"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/machine/vmdef"
)

// ANSI sequences of the in-place refresh.
const (
	ansiClear      = "\x1b[H\x1b[2J" // cursor home, clear the screen
	ansiHideCursor = "\x1b[?25l"
	ansiShowCursor = "\x1b[?25h"
)

// topCmd shows the running VMs' CPU, memory, disk and net rates, from
// two scrapes of each VMM's metrics an interval apart, refreshed in
// place on a terminal; elsewhere each refresh is printed after the last.
func topCmd(c *vmCommand) func() int {
	interval := c.fs.Duration("interval", 2*time.Second, "time (`D`) between refreshes")
	iterations := c.fs.Int("iterations", 0, "refresh `N` times, then exit (0: until interrupted)")
	return func() int {
		switch {
		case *interval < 100*time.Millisecond:
			return c.usageErr("--interval %v: want 100ms or more", *interval)
		case *iterations < 0:
			return c.usageErr("--iterations %d: want 0 or more", *iterations)
		}
		dir, err := c.open()
		if err != nil {
			return c.fail(err)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		tty, ttyFD := terminal(c.env.stdout)
		if tty {
			fmt.Fprint(c.env.stdout, ansiHideCursor)
			defer fmt.Fprint(c.env.stdout, ansiShowCursor)
		}
		prev, err := sampleVMs(dir, c)
		if err != nil {
			return c.fail(err)
		}
		for i := 0; *iterations == 0 || i < *iterations; i++ {
			select {
			case <-ctx.Done():
				return exitOK
			case <-time.After(*interval):
			}
			cur, err := sampleVMs(dir, c)
			if err != nil {
				return c.fail(err)
			}
			frame := renderTop(prev, cur, time.Now())
			if tty {
				if w, h, err := term.GetSize(ttyFD); err == nil {
					frame = fitFrame(frame, w, h)
				}
				frame = ansiClear + frame
			} else if i > 0 {
				frame = "\n" + frame
			}
			if _, err := io.WriteString(c.env.stdout, frame); err != nil {
				return c.fail(err)
			}
			prev = cur
		}
		return exitOK
	}
}

// terminal reports whether w is a terminal, and its descriptor.
func terminal(w io.Writer) (bool, int) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false, 0
	}
	return true, int(f.Fd())
}

// vmSample is one VM's state and counters at one moment.
type vmSample struct {
	vm      vmInfo
	at      time.Time
	scraped bool
	// Counters (seconds, bytes) and gauges summed over the VM's devices.
	cpu, guest, rss        float64
	diskRead, diskWrite    float64
	netRx, netTx           float64
	hasDisk, hasNet, hasRS bool
}

// sampleVMs lists the VMs and scrapes the running ones.
func sampleVMs(dir *state.Dir, c *vmCommand) (map[string]vmSample, error) {
	vms, err := listVMs(dir, c)
	if err != nil {
		return nil, err
	}
	out := make(map[string]vmSample, len(vms))
	for _, vm := range vms {
		s := vmSample{vm: vm}
		if vm.State != api.StateStopped && vm.Error == "" {
			text, err := scrapeVM(dir, vm.Name)
			var fams map[string]*dto.MetricFamily
			if err == nil {
				fams, err = api.ParseMetrics(text)
			}
			if err != nil {
				s.vm.Error = err.Error()
			} else {
				s.at, s.scraped = time.Now(), true
				s.fill(fams)
			}
		}
		out[vm.Name] = s
	}
	return out, nil
}

// fill sums the metrics top shows.
func (s *vmSample) fill(fams map[string]*dto.MetricFamily) {
	s.cpu, _ = sumMetric(fams, "gvmm_vmm_cpu_seconds_total", "", "")
	s.guest, _ = sumMetric(fams, "gvmm_vcpu_seconds_total", "mode", "guest")
	s.rss, s.hasRS = sumMetric(fams, "gvmm_vmm_rss_bytes", "", "")
	s.diskRead, s.hasDisk = sumMetric(fams, "gvmm_disk_bytes_total", "op", "read")
	s.diskWrite, _ = sumMetric(fams, "gvmm_disk_bytes_total", "op", "write")
	s.netRx, s.hasNet = sumMetric(fams, "gvmm_net_bytes_total", "direction", "rx")
	s.netTx, _ = sumMetric(fams, "gvmm_net_bytes_total", "direction", "tx")
}

// sumMetric adds up a counter's or gauge's series whose label has value
// (all of them if label is ""); ok is false if there is none.
func sumMetric(fams map[string]*dto.MetricFamily, name, label, value string) (sum float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if label != "" && !hasLabel(m, label, value) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		default:
			continue
		}
		ok = true
	}
	return sum, ok
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

// renderTop draws one frame from two samples.
func renderTop(prev, cur map[string]vmSample, now time.Time) string {
	var b bytes.Buffer
	running := 0
	for _, s := range cur {
		if s.vm.State != api.StateStopped {
			running++
		}
	}
	fmt.Fprintf(&b, "gvmm top - %s - %d of %d VMs running\n\n", now.Format(time.TimeOnly), running, len(cur))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tVCPUS\tCPU%\tGUEST%\tRSS\tMEMORY\tDISK RD/s\tDISK WR/s\tNET RX/s\tNET TX/s\tUPTIME")
	names := make([]string, 0, len(cur))
	for n := range cur {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		s, p := cur[n], prev[n]
		dt := 0.0
		if s.scraped && p.scraped && p.vm.PID == s.vm.PID {
			dt = s.at.Sub(p.at).Seconds()
		}
		rate := func(now, before float64, has bool, format func(float64) string) string {
			if !has || dt <= 0 || now < before {
				return "-"
			}
			return format((now - before) / dt)
		}
		percent := func(v float64) string { return fmt.Sprintf("%.1f", v*100) }
		st, uptime, rss := s.vm.State, "-", "-"
		if s.vm.Error != "" {
			st += " (no answer)"
		} else if s.vm.State != api.StateStopped {
			uptime = (time.Duration(s.vm.UptimeSeconds) * time.Second).String()
		}
		if s.hasRS {
			rss = formatBytes(s.rss)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n, st, s.vm.VCPUs,
			rate(s.cpu, p.cpu, s.scraped, percent), rate(s.guest, p.guest, s.scraped, percent),
			rss, vmdef.FormatSize(s.vm.MemoryMiB*api.MiB),
			rate(s.diskRead, p.diskRead, s.hasDisk, formatBytes), rate(s.diskWrite, p.diskWrite, s.hasDisk, formatBytes),
			rate(s.netRx, p.netRx, s.hasNet, formatBytes), rate(s.netTx, p.netTx, s.hasNet, formatBytes), uptime)
	}
	tw.Flush()
	return b.String()
}

// formatBytes writes a byte count (or rate) with a binary unit: 512,
// 1.5K, 3.0M, 2.0G.
func formatBytes(v float64) string {
	const units = "KMGTP"
	if v < 1024 {
		return fmt.Sprintf("%.0f", v)
	}
	i := -1
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f%c", v, units[i])
}

// fitFrame cuts a frame to the terminal's width and to one line less
// than its height, so that the last newline does not scroll it.
func fitFrame(frame string, width, height int) string {
	lines := strings.Split(strings.TrimSuffix(frame, "\n"), "\n")
	if height > 1 && len(lines) > height-1 {
		lines = lines[:height-1]
	}
	for i, l := range lines {
		if width > 0 && len(l) > width {
			lines[i] = l[:width]
		}
	}
	return strings.Join(lines, "\n") + "\n"
}
