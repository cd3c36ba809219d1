package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gvmm-dev/gvmm/machine/api"
)

func TestParseBalloonSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"00", 0, true},
		{"0M", 0, true},
		{"0g", 0, true},
		{"256", 256, true},
		{"256M", 256, true},
		{"1G", 1024, true},
		{"2048K", 2, true},
		{"1T", 1 << 20, true},
		{"512K", 0, false},
		{"1.5G", 0, false},
		{"-1", 0, false},
		{"", 0, false},
		{"M", 0, false},
		{"0B", 0, false},
		{"256MB", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseBalloonSize(tt.in)
			if !tt.ok {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestCtlUsageErrors(t *testing.T) {
	s := "--api-socket=/nonexistent/gvmm.sock" // never dialled: these fail first
	tests := []struct {
		args    []string
		wantMsg string
	}{
		{nil, "--api-socket is required"},
		{[]string{"info"}, "--api-socket is required"},
		{[]string{"--bogus", "info"}, "unknown flag: --bogus"},
		{[]string{s}, "missing command"},
		{[]string{s, "--timeout", "0s", "info"}, "positive duration"},
		{[]string{s, "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{s, "info", "now"}, `unexpected argument "now"`},
		{[]string{s, "info", "--timeout", "1s"}, "flags go before the command"},
		{[]string{s, "pause", "all"}, "unexpected argument"},
		{[]string{s, "balloon"}, "needs a SIZE"},
		{[]string{s, "balloon", "12Q"}, "balloon: size"},
		{[]string{s, "balloon", "-5"}, "balloon: size"},
		{[]string{s, "balloon", "1G", "2G"}, `unexpected argument "2G"`},
		{[]string{s, "snapshot"}, "needs a DIR"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			assert.Equal(t, exitUsage, ctl(tt.args, &stdout, &stderr))
			assert.Empty(t, stdout.String())
			assert.Contains(t, stderr.String(), tt.wantMsg)
		})
	}
}

func TestCtlHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	assert.Equal(t, exitOK, ctl([]string{"--help"}, &stdout, &stderr))
	assert.Contains(t, stdout.String(), "balloon SIZE")
	assert.Contains(t, stdout.String(), "--api-socket PATH")
}

// ctlVM is a VM that records what it is asked.
type ctlVM struct {
	mu      sync.Mutex
	paused  bool
	balloon uint64
	calls   []string
}

var _ api.VM = (*ctlVM)(nil)

func (v *ctlVM) Gatherer() prometheus.Gatherer { return prometheus.NewRegistry() }

func (v *ctlVM) Info() api.Info {
	v.mu.Lock()
	defer v.mu.Unlock()
	state := api.StateRunning
	if v.paused {
		state = api.StatePaused
	}
	return api.Info{State: state, VCPUs: 1, MemoryMiB: 1024, UptimeSeconds: 2,
		Balloon: &api.BalloonInfo{RequestedMiB: v.balloon / api.MiB}}
}

func (v *ctlVM) SetBalloon(b uint64) error {
	v.record("balloon")
	v.mu.Lock()
	defer v.mu.Unlock()
	v.balloon = b
	return nil
}

func (v *ctlVM) SetNetRateLimit(string, api.RateLimit) error      { return api.ErrNotFound }
func (v *ctlVM) SetDiskRateLimit(string, api.DiskRateLimit) error { return api.ErrNotFound }

func (v *ctlVM) BalloonStats() (api.BalloonStats, error) {
	return api.BalloonStats{Stats: map[string]uint64{"free_memory": 5}, HostRSSBytes: 7}, nil
}

func (v *ctlVM) Pause() error {
	v.record("pause")
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.paused {
		return api.ErrConflict
	}
	v.paused = true
	return nil
}

func (v *ctlVM) Resume() error {
	v.record("resume")
	v.mu.Lock()
	defer v.mu.Unlock()
	v.paused = false
	return nil
}

func (v *ctlVM) Snapshot(dir string) error {
	v.record("snapshot " + dir)
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.paused {
		return api.ErrConflict
	}
	return nil
}

func (v *ctlVM) Shutdown() error { v.record("shutdown"); return nil }
func (v *ctlVM) Stop()           { v.record("stop") }

func (v *ctlVM) record(call string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, call)
}

func serveAPI(t *testing.T, vm api.VM) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	s := api.NewServer(vm, nil)
	require.NoError(t, s.Listen(path))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	return path
}

func TestCtlRoundTrip(t *testing.T) {
	vm := &ctlVM{}
	sock := serveAPI(t, vm)
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := ctl(append([]string{"--api-socket", sock, "--timeout", "10s"}, args...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	code, out, errOut := run("balloon", "256M")
	require.Equal(t, exitOK, code, errOut)
	assert.Empty(t, out)
	assert.Equal(t, uint64(256*api.MiB), vm.balloon)

	code, out, errOut = run("info")
	require.Equal(t, exitOK, code, errOut)
	var info api.Info
	require.NoError(t, json.Unmarshal([]byte(out), &info))
	assert.Equal(t, vm.Info(), info)
	assert.Contains(t, out, "\n  \"state\": \"running\"", "pretty-printed")

	code, out, errOut = run("balloon-stats")
	require.Equal(t, exitOK, code, errOut)
	var stats api.BalloonStats
	require.NoError(t, json.Unmarshal([]byte(out), &stats))
	assert.Equal(t, uint64(5), stats.Stats["free_memory"])

	for _, cmd := range []string{"pause", "resume", "shutdown", "stop"} {
		code, out, errOut = run(cmd)
		require.Equal(t, exitOK, code, "%s: %s", cmd, errOut)
		assert.Empty(t, out)
	}
	code, _, errOut = run("balloon", "0")
	require.Equal(t, exitOK, code, errOut)
	assert.Zero(t, vm.balloon)
	code, _, errOut = run("snapshot", "/srv/snap1")
	require.Equal(t, exitFault, code, "a snapshot of a running VM")
	assert.Contains(t, errOut, "409 Conflict")
	vm.paused = true
	code, _, errOut = run("snapshot", "/srv/snap1")
	require.Equal(t, exitOK, code, errOut)
	assert.Equal(t, []string{"balloon", "pause", "resume", "shutdown", "stop", "balloon", "snapshot /srv/snap1", "snapshot /srv/snap1"}, vm.calls)
}

func TestCtlServerErrorsExitOne(t *testing.T) {
	vm := &ctlVM{paused: true}
	sock := serveAPI(t, vm)
	tests := []struct {
		name    string
		args    []string
		wantMsg string
	}{
		{"conflict", []string{"--api-socket", sock, "pause"}, "gvmm ctl pause: the machine's state does not allow this (409 Conflict)"},
		{"too large", []string{"--api-socket", sock, "balloon", "2G"}, "larger than the guest's memory of 1024 MiB (400 Bad Request)"},
		{"no server", []string{"--api-socket", filepath.Join(t.TempDir(), "none.sock"), "info"}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			var stdout, stderr bytes.Buffer
			assert.Equal(t, exitFault, ctl(tt.args, &stdout, &stderr))
			assert.Empty(t, stdout.String())
			assert.Contains(t, stderr.String(), tt.wantMsg)
			assert.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

// ctl runs "gvmm ctl args" with its output on stdout and errors on stderr.
func ctl(args []string, stdout, stderr io.Writer) int {
	return execute(cmdEnv{stdout: stdout, stderr: stderr, getenv: func(string) string { return "" }}, append([]string{"ctl"}, args...))
}
