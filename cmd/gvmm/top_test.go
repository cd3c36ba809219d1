package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/machine/api"
)

func TestMetricsCommand(t *testing.T) {
	t.Setenv(envFakeVMM, "poweroff")
	w := newWorld(t)
	w.define("web1")
	w.define("db1")
	w.ok("start", "web1")
	t.Cleanup(func() { w.gvmm("destroy", "web1") })

	first := w.ok("metrics", "web1")
	time.Sleep(50 * time.Millisecond)
	fams, err := api.ParseMetrics([]byte(w.ok("metrics", "web1")))
	require.NoError(t, err)
	before, err := api.ParseMetrics([]byte(first))
	require.NoError(t, err)
	read := func(f map[string]*dto.MetricFamily) float64 {
		v, ok := sumMetric(f, "gvmm_disk_bytes_total", "op", "read")
		require.True(t, ok, "no gvmm_disk_bytes_total{op=read} in\n%s", first)
		return v
	}
	assert.Greater(t, read(fams), read(before), "the counter moves between scrapes")

	tests := []struct {
		args    []string
		code    int
		wantErr string
	}{
		{[]string{"metrics", "db1"}, exitFault, "db1 is not running"},
		{[]string{"metrics", "nosuch"}, exitFault, "nosuch"},
		{[]string{"metrics"}, exitUsage, "missing NAME"},
		{[]string{"metrics", "web1", "db1"}, exitUsage, `unexpected argument "db1"`},
		{[]string{"top", "--interval", "1ms"}, exitUsage, "want 100ms or more"},
		{[]string{"top", "--iterations", "-1"}, exitUsage, "want 0 or more"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := w.gvmm(tt.args...)
			assert.Equal(t, tt.code, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, tt.wantErr)
		})
	}
}

// topRow matches web1's row with the fake VMM's rates: CPU 25%, guest
// 20%, 100M resident, disk 3M/s read and 1M/s written, net 2M/s in and
// 512K/s out (a scrape's latency may shift the last digit).
var topRow = regexp.MustCompile(`web1 +running +1 +2[45]\.\d +(19|20)\.\d +100\.0M +256M +(2\.9|3\.0|3\.1)M +(10[012]\d\.\dK|1\.0M) +(1\.9|2\.0|2\.1)M +5[01]\d\.\dK +\d+s`)

func TestTopPrintsRatesWithoutATerminal(t *testing.T) {
	t.Setenv(envFakeVMM, "poweroff")
	w := newWorld(t)
	w.define("web1")
	w.define("db1")
	w.ok("start", "web1")
	t.Cleanup(func() { w.gvmm("destroy", "web1") })

	out := w.ok("top", "--interval", "1s", "--iterations", "2")
	assert.NotContains(t, out, "\x1b[", "no terminal control sequences in a pipe")
	assert.Equal(t, 2, strings.Count(out, "1 of 2 VMs running"), out)
	assert.Len(t, topRow.FindAllString(out, -1), 2, out)
	assert.Regexp(t, `db1 +stopped +1 +- +- +- +256M +- +- +- +- +-\n`, out)
}

// TestTopInTmux runs gvmm top in a terminal, a tmux session, and reads
// the screen: the frame is redrawn in place with the VM's rates, and
// Ctrl-C ends it.
func TestTopInTmux(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	require.NoError(t, err, "tmux is needed (make deps installs it)")
	t.Setenv(envFakeVMM, "poweroff")
	w := newWorld(t)
	w.define("web1")
	w.ok("start", "web1")
	t.Cleanup(func() { w.gvmm("destroy", "web1") })

	sock := filepath.Join(t.TempDir(), "tmux.sock")
	run := func(args ...string) string {
		out, err := exec.Command(tmux, append([]string{"-S", sock}, args...)...).CombinedOutput()
		require.NoError(t, err, "tmux %v: %s", args, out)
		return string(out)
	}
	cmd := fmt.Sprintf("env %s=1 GVMM_STATE_DIR=%s %s top --interval 1s", envAsGVMM, w.state, os.Args[0])
	run("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "120", "-y", "20", cmd)
	t.Cleanup(func() { _ = exec.Command(tmux, "-S", sock, "kill-server").Run() })

	var screen string
	headerTime := regexp.MustCompile(`gvmm top - (\d\d:\d\d:\d\d)`)
	var times []string
	require.Eventually(t, func() bool {
		screen = run("capture-pane", "-p", "-t", "top")
		if m := headerTime.FindStringSubmatch(screen); m != nil && (len(times) == 0 || times[len(times)-1] != m[1]) {
			times = append(times, m[1])
		}
		return len(times) >= 3
	}, 15*time.Second, 100*time.Millisecond, "three refreshes; the screen:\n%s", screen)
	assert.Regexp(t, topRow, screen)
	assert.Equal(t, 1, strings.Count(screen, "NAME"), "one frame on the screen, redrawn in place:\n%s", screen)
	assert.True(t, strings.HasPrefix(screen, "gvmm top - "), "the frame starts at the top:\n%s", screen)

	run("send-keys", "-t", "top", "C-c")
	require.Eventually(t, func() bool {
		return exec.Command(tmux, "-S", sock, "has-session", "-t", "top").Run() != nil
	}, 5*time.Second, 50*time.Millisecond, "gvmm top ends on Ctrl-C")
}

func TestFormatBytes(t *testing.T) {
	for _, tt := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {1023, "1023"}, {1024, "1.0K"}, {1536, "1.5K"}, {3 << 20, "3.0M"}, {5 << 30, "5.0G"}, {1 << 60, "1024.0P"},
	} {
		assert.Equal(t, tt.want, formatBytes(tt.v), "%v", tt.v)
	}
}

func TestFitFrame(t *testing.T) {
	frame := "a long first line\nsecond\nthird\nfourth\n"
	assert.Equal(t, "a lon\nsecon\n", fitFrame(frame, 5, 3))
	assert.Equal(t, frame, fitFrame(frame, 80, 24))
}
