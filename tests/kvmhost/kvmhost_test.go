package kvmhost

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/tests/kvmhost/hostproto"
)

func TestForwardFlagsDropsHostFiles(t *testing.T) {
	in := []string{"-test.v=true", "-test.testlogfile=/tmp/go-build1/testlog.txt", "-test.run=TestX",
		"-test.coverprofile=/tmp/c.out", "-test.timeout=10m0s", "-test.paniconexit0"}
	assert.Equal(t, []string{"-test.v=true", "-test.run=TestX", "-test.paniconexit0"}, forwardFlags(in))
}

func TestHostTimeout(t *testing.T) {
	assert.Equal(t, 9*time.Minute, hostTimeout(nil))
	assert.Equal(t, 19*time.Minute, hostTimeout([]string{"-test.timeout=20m0s"}))
	assert.Equal(t, 9*time.Minute, hostTimeout([]string{"-test.timeout=0s"}), "no timeout still gets a bound")
	assert.Equal(t, time.Minute, hostTimeout([]string{"-test.timeout=30s"}))
	assert.Equal(t, "-test.timeout=18m0s", innerTimeout(19*time.Minute))
}

func TestReport(t *testing.T) {
	tests := []struct {
		name    string
		console string
		status  int
		errMsg  string
	}{
		{"status", "[    1.0] booting\nGVMM-KVMHOST-EXIT 3\n[ 2.0] reboot: Power down\n", 3, ""},
		{"carriage returns", "GVMM-KVMHOST-EXIT 0\r\n", 0, ""},
		{"setup error", "GVMM-KVMHOST-ERROR no /dev/kvm\nGVMM-KVMHOST-EXIT 125\n", 0, "no /dev/kvm"},
		{"no status", "Kernel panic - not syncing\n", 0, "without reporting"},
		{"garbled", "GVMM-KVMHOST-EXIT x\n", 0, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "console.log")
			require.NoError(t, os.WriteFile(p, []byte(tt.console), 0o644))
			status, err := report(p)
			if tt.errMsg != "" {
				assert.ErrorContains(t, err, tt.errMsg)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.status, status)
		})
	}
}

func TestWatchAliveSeesAFrozenHost(t *testing.T) {
	tests := []struct {
		name       string
		aliveLines int // written every 10 ms, from the start
		wantFroze  bool
	}{
		{"never alive", 0, true},
		{"alive, then silent", 3, true},
		{"alive throughout", 200, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "console.log")
			require.NoError(t, os.WriteFile(log, nil, 0o644))
			froze := make(chan struct{}, 2)
			stop := watchAlive(log, 5*time.Millisecond, 250*time.Millisecond, 250*time.Millisecond, func() { froze <- struct{}{} })
			defer stop()
			f, err := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
			require.NoError(t, err)
			defer f.Close()
			deadline := time.After(time.Second)
			for i := 0; ; i++ {
				if i < tt.aliveLines {
					_, err := f.WriteString("noise " + hostproto.AliveMarker + "\n")
					require.NoError(t, err)
				}
				select {
				case <-froze:
					require.True(t, tt.wantFroze, "a live host was called frozen after %d lines", i)
					return
				case <-deadline:
					require.False(t, tt.wantFroze, "a silent host was not called frozen")
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
	}
}

func TestResultsSkipThePassedTests(t *testing.T) {
	tests := []struct {
		name       string
		output     []string // as written, in pieces
		args       []string
		wantSkip   []string
		wantFailed bool
	}{
		{"nothing passed", []string{"=== RUN   TestA\n"}, nil, nil, false},
		{"top-level passes only", []string{"--- PASS: TestA (1.00s)\n    --- PASS: TestB/sub (0.1s)\n--- PA", "SS: TestC (2s)\n"},
			nil, []string{"-test.skip=^(TestA|TestC)$"}, false},
		{"merged with the caller's skip", []string{"--- PASS: TestA (1s)\n"},
			[]string{"-test.skip=TestZ"}, []string{"-test.skip=TestZ|^(TestA)$"}, false},
		{"a failure is noted", []string{"--- PASS: TestA (1s)\n--- FAIL: TestB (1s)\n"},
			nil, []string{"-test.skip=^(TestA)$"}, true},
		{"a subtest failure counts before its parent ends", []string{"    --- FAIL: TestB/x (1s)\n"}, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			r := &testResults{w: &out}
			for _, s := range tt.output {
				_, err := r.Write([]byte(s))
				require.NoError(t, err)
			}
			assert.Equal(t, strings.Join(tt.output, ""), out.String(), "the output passes through")
			assert.Equal(t, tt.wantSkip, r.skipPassed(tt.args))
			assert.Equal(t, tt.wantFailed, r.anyFailed())
		})
	}
}

// Piped input waits for hostinit's ready line, and ends with the host.
func TestHeldInput(t *testing.T) {
	log := filepath.Join(t.TempDir(), "console.log")
	require.NoError(t, os.WriteFile(log, []byte("booting\n"), 0o600))
	ready, done := make(chan struct{}), make(chan struct{})
	h := &heldReader{r: strings.NewReader("echo hi\n"), ready: ready, done: done}
	stop := watchReady(log, ready)
	defer stop()
	got := make(chan string)
	go func() {
		b := make([]byte, 64)
		n, _ := h.Read(b)
		got <- string(b[:n])
	}()
	select {
	case s := <-got:
		t.Fatalf("read %q before the host was ready", s)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, os.WriteFile(log, []byte("booting\n"+hostproto.ReadyMarker+"\n"), 0o600))
	select {
	case s := <-got:
		assert.Equal(t, "echo hi\n", s)
	case <-time.After(5 * time.Second):
		t.Fatal("still held after the ready line")
	}

	never := &heldReader{r: strings.NewReader("lost"), ready: make(chan struct{}), done: done}
	close(done)
	n, err := never.Read(make([]byte, 8))
	assert.Zero(t, n)
	assert.ErrorIs(t, err, io.EOF, "a host that ended reads no more")
}
