package balloon_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/vmmdiag"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// guestInitrd builds the guests' initramfs: guestmem as /init and the
// modules it loads, in load order.
func guestInitrd(t *testing.T) string {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	mods, err := k.Modules(guestModules...)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "guest.cpio")
	require.NoError(t, initramfs.WriteGuest(p, kvmhost.Asset("guestmem"), mods))
	return p
}

// machineSpec is one gvmm run of guestmem.
type machineSpec struct {
	cpus   int
	memory string   // --memory
	extra  []string // more flags of gvmm run
	api    bool     // serve the control API on a socket
}

// vmm is a running gvmm whose guest takes commands on its console and
// whose reports are collected live.
type vmm struct {
	name   string
	cmd    *exec.Cmd
	ctx    context.Context
	stdin  io.WriteCloser
	out    *guest.Recorder // the guest's console
	errb   *guest.Recorder // gvmm's log
	socket string          // "" without the API
	client *api.Client

	started time.Time
	exited  chan struct{} // closed once gvmm ended
	waitErr error         // set before exited is closed
}

// start boots guestmem with spec; runTimeout bounds the whole run.
func start(t *testing.T, name, initrd string, spec machineSpec) *vmm {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	args := []string{"run", "--kernel", k.Vmlinuz, "--initrd", initrd,
		"--cmdline", "console=ttyS0 reboot=k panic=1 quiet",
		"--cpus", strconv.Itoa(spec.cpus), "--memory", spec.memory}
	args = append(args, spec.extra...)
	v := &vmm{name: name, out: &guest.Recorder{}, errb: &guest.Recorder{}, exited: make(chan struct{})}
	if spec.api {
		// A short path: a unix socket's is limited to 107 bytes.
		dir, err := os.MkdirTemp("", "gvmm-api-")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(dir) })
		v.socket = filepath.Join(dir, "api.sock")
		v.client = api.NewClient(v.socket)
		t.Cleanup(v.client.Close)
		args = append(args, "--api-socket", v.socket)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	v.ctx = ctx
	v.cmd = exec.CommandContext(ctx, kvmhost.Asset("gvmm"), args...)
	v.cmd.Stdout, v.cmd.Stderr = v.out, v.errb
	v.cmd.WaitDelay = 5 * time.Second
	v.stdin, err = v.cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, v.cmd.Start())
	v.started = time.Now()
	go func() {
		v.waitErr = v.cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-v.exited:
		default:
			if t.Failed() { // while it runs: is it spinning or asleep?
				t.Logf("%s: %s", v.name, vmmdiag.Snapshot(v.pid(), 2*time.Second))
			}
		}
		cancel()
		<-v.exited
		if t.Failed() {
			t.Logf("%s: gvmm %s\n%s", v.name, strings.Join(args, " "), v.output())
		}
	})
	return v
}

func (v *vmm) output() string {
	return fmt.Sprintf("--- %s: guest console (gvmm stdout) ---\n%s--- %s: gvmm stderr ---\n%s",
		v.name, v.out.String(), v.name, v.errb.String())
}

func (v *vmm) pid() int { return v.cmd.Process.Pid }

// send writes a command line to the guest's console.
func (v *vmm) send(t *testing.T, line string) {
	t.Helper()
	_, err := io.WriteString(v.stdin, line+"\n")
	require.NoError(t, err, "%s: writing %q to the guest's console\n%s", v.name, line, v.output())
}

// waitFor waits up to d until the guest's values for key satisfy ok,
// and returns them; gvmm ending first fails the test.
func (v *vmm) waitFor(t *testing.T, key string, d time.Duration, ok func([]string) bool) []string {
	t.Helper()
	vals, err := v.await(key, d, ok)
	require.NoError(t, err)
	return vals
}

// await is waitFor for any goroutine: it returns an error (with the
// machine's output) instead of failing the test.
func (v *vmm) await(key string, d time.Duration, ok func([]string) bool) ([]string, error) {
	deadline := time.Now().Add(d)
	for {
		vals := v.out.Values(key)
		if ok(vals) {
			return vals, nil
		}
		select {
		case <-v.exited:
			return nil, fmt.Errorf("%s: gvmm ended (%v) before the guest reported the awaited %s (reports %q)\n%s",
				v.name, v.waitErr, key, vals, v.output())
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: the guest did not report the awaited %s in %s (reports %q)\n%s",
				v.name, key, d, vals, v.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// count is a waitFor condition: at least n values.
func count(n int) func([]string) bool { return func(v []string) bool { return len(v) >= n } }

// ready waits for the guest's init to take commands and checks it saw no
// error on the way.
func (v *vmm) ready(t *testing.T) {
	t.Helper()
	v.waitFor(t, "ready", bootTimeout, count(1))
	t.Logf("%s: ready %s after gvmm started", v.name, time.Since(v.started).Round(100*time.Millisecond))
	require.Empty(t, v.out.Values("error"), "%s: the guest reported errors\n%s", v.name, v.output())
}

// one returns the guest's only value for key.
func (v *vmm) one(t *testing.T, key string) string {
	t.Helper()
	vals := v.out.Values(key)
	require.Len(t, vals, 1, "%s: GVMMTEST %s\n%s", v.name, key, v.output())
	return vals[0]
}

// command sends cmd and returns the guest's next value for key.
func (v *vmm) command(t *testing.T, cmd, key string, d time.Duration) string {
	t.Helper()
	n := len(v.out.Values(key))
	v.send(t, cmd)
	return v.waitFor(t, key, d, count(n+1))[n]
}

// alloc has the guest touch n MiB more and hold them.
func (v *vmm) alloc(t *testing.T, n int) {
	t.Helper()
	require.Equal(t, "ok", v.command(t, fmt.Sprintf("alloc %d", n), "alloc", allocTimeout), "%s: alloc %d\n%s", v.name, n, v.output())
}

// meminfo returns the guest's MemTotal, MemFree and MemAvailable as
// total_kb, free_kb and available_kb.
func (v *vmm) meminfo(t *testing.T) map[string]uint64 {
	t.Helper()
	s := v.command(t, "meminfo", "meminfo", apiTimeout)
	out := map[string]uint64{}
	for _, f := range strings.Fields(s) {
		k, val, ok := strings.Cut(f, "=")
		require.True(t, ok, "meminfo %q", s)
		n, err := strconv.ParseUint(val, 10, 64)
		require.NoError(t, err, "meminfo %q", s)
		out[k] = n
	}
	return out
}

// exit waits up to d for gvmm's end and returns its exit status.
func (v *vmm) exit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-v.exited:
	case <-time.After(d):
		t.Fatalf("%s: gvmm still runs %s on\n%s", v.name, d, v.output())
	}
	require.NoError(t, v.ctx.Err(), "%s: gvmm did not finish in %s\n%s", v.name, runTimeout, v.output())
	var exit *exec.ExitError
	switch {
	case errors.As(v.waitErr, &exit):
		return exit.ExitCode()
	case v.waitErr != nil:
		t.Fatalf("%s: running gvmm: %v\n%s", v.name, v.waitErr, v.output())
	}
	return 0
}

// quit powers the guest off from inside and expects gvmm to exit 0.
func (v *vmm) quit(t *testing.T) {
	t.Helper()
	v.send(t, "quit")
	require.Equal(t, 0, v.exit(t, exitTimeout), "%s: gvmm's exit status\n%s", v.name, v.output())
}

// rssMiB is gvmm's resident set size in MiB, from /proc/PID/status.
func (v *vmm) rssMiB(t *testing.T) float64 {
	t.Helper()
	kb, err := statusKB(v.pid(), "VmRSS")
	require.NoError(t, err, "%s\n%s", v.name, v.output())
	return float64(kb) / 1024
}

func statusKB(pid int, field string) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// info asks the control API for the machine's state, waiting for the
// socket to answer at first.
func (v *vmm) info(t *testing.T) api.Info {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	i, err := v.client.Info(ctx)
	require.NoError(t, err, "%s: GET /vm\n%s", v.name, v.output())
	return i
}

// ctl runs "gvmm ctl" against the machine's socket and returns its
// status and output.
func (v *vmm) ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvmhost.Asset("gvmm"), append([]string{"ctl", "--api-socket", v.socket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "gvmm ctl %v did not finish", args)
	status := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		status = exit.ExitCode()
	case err != nil:
		t.Fatalf("running gvmm ctl %v: %v", args, err)
	}
	return status, out.String(), errb.String()
}

// rawResponse is an answer of the control socket read without api.Client.
type rawResponse struct {
	status      int
	contentType string
	body        []byte
}

// rawRequest sends one HTTP request over the control socket, writing the
// body alongside reading the answer (the server may answer and close
// before it has read all of a large body).
func (v *vmm) rawRequest(t *testing.T, method, path string, body []byte) rawResponse {
	t.Helper()
	conn, err := net.DialTimeout("unix", v.socket, apiTimeout)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(apiTimeout)))
	head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: gvmm\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		method, path, len(body))
	_, err = io.WriteString(conn, head)
	require.NoError(t, err)
	go func() { _, _ = conn.Write(body) }() // may fail once the server has answered
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "%s %s: reading the answer", method, path)
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	require.NoError(t, err)
	return rawResponse{resp.StatusCode, resp.Header.Get("Content-Type"), b}
}

// ksm reads a KSM counter or setting of /sys/kernel/mm/ksm.
func ksm(t *testing.T, name string) uint64 {
	t.Helper()
	b, err := os.ReadFile(ksmDir + name)
	require.NoError(t, err)
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	require.NoError(t, err, "%s%s", ksmDir, name)
	return n
}

func setKSM(t *testing.T, name string, v uint64) {
	t.Helper()
	require.NoError(t, os.WriteFile(ksmDir+name, []byte(strconv.FormatUint(v, 10)), 0o644), "writing %s%s", ksmDir, name)
}

// ksmMergingPages is how many of pid's pages KSM merged.
func ksmMergingPages(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/ksm_merging_pages", pid))
	require.NoError(t, err)
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	require.NoError(t, err)
	return n
}

// mergeableFrames finds gvmm's memory marked for KSM (MADV_MERGEABLE,
// "mg" among the VmFlags of /proc/PID/smaps: its guest RAM) and returns
// the host page frames of its resident pages, from /proc/PID/pagemap
// (which shows frame numbers to root only). ok is false when no mapping
// is marked. Pages that KSM merged between two processes are the same
// frames in both.
func mergeableFrames(t *testing.T, pid int) (frames map[uint64]bool, ok bool) {
	t.Helper()
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	require.NoError(t, err)
	pagemap, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	require.NoError(t, err)
	defer pagemap.Close()
	const (
		page       = 4096
		present    = 1 << 63
		frameMask  = 1<<55 - 1
		entryBytes = 8
	)
	frames = map[uint64]bool{}
	var start, end uint64
	for _, line := range strings.Split(string(smaps), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			lo, hi, _ := strings.Cut(f[0], "-")
			start, err = strconv.ParseUint(lo, 16, 64)
			require.NoError(t, err, "smaps: %q", line)
			end, err = strconv.ParseUint(hi, 16, 64)
			require.NoError(t, err, "smaps: %q", line)
			continue
		}
		if len(f) == 0 || f[0] != "VmFlags:" || !slices.Contains(f[1:], "mg") {
			continue
		}
		ok = true
		buf := make([]byte, (end-start)/page*entryBytes)
		_, err := pagemap.ReadAt(buf, int64(start/page*entryBytes))
		require.NoError(t, err, "pagemap of [%#x, %#x)", start, end)
		for i := 0; i < len(buf); i += entryBytes {
			if e := binary.LittleEndian.Uint64(buf[i:]); e&present != 0 && e&frameMask != 0 {
				frames[e&frameMask] = true
			}
		}
	}
	return frames, ok
}

// decodeJSON decodes b strictly into v.
func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(v), "decoding %s", b)
}
