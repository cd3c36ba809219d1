package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// startServer serves vm on a socket in a fresh directory until the test ends.
func startServer(t *testing.T, vm VM) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	s := NewServer(vm, nil)
	require.NoError(t, s.Listen(path))
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		assert.NoError(t, s.Close())
		assert.NoError(t, <-done)
	})
	return s, path
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

// send makes one raw request over the socket; a body of nil sends none,
// and chunked sends body without a Content-Length.
func send(t *testing.T, socket, method, target string, body []byte, chunked bool) answer {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	defer tr.CloseIdleConnections()
	var r io.Reader
	if body != nil {
		r = strings.NewReader(string(body))
		if chunked {
			r = io.MultiReader(r) // hides the length
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://gvmm"+target, r)
	require.NoError(t, err)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{resp.StatusCode, resp.Header, b}
}

// errorText checks that a is a JSON error answer and returns its text.
func errorText(t *testing.T, a answer) string {
	t.Helper()
	assert.Equal(t, "application/json", a.header.Get("Content-Type"))
	var e map[string]any
	require.NoError(t, json.Unmarshal(a.body, &e), "body %q", a.body)
	require.Len(t, e, 1, "body %q", a.body)
	msg, ok := e["error"].(string)
	require.True(t, ok, "body %q", a.body)
	assert.NotEmpty(t, msg)
	return msg
}

func TestEndpoints(t *testing.T) {
	tests := []struct {
		name         string
		setup        func(*fakeVM)
		method, path string
		body         string
		wantStatus   int
		wantBody     string // JSON, compared semantically; "" for none
		check        func(*testing.T, *fakeVM)
	}{
		{name: "info", method: "GET", path: "/vm", wantStatus: 200,
			wantBody: `{"state":"running","vcpus":2,"memory_mib":512,"balloon":{"size_mib":0,"actual_mib":0},"uptime_s":1.5}`},
		{name: "info without balloon", setup: func(f *fakeVM) { f.noBalloon = true }, method: "GET", path: "/vm", wantStatus: 200,
			wantBody: `{"state":"running","vcpus":2,"memory_mib":512,"uptime_s":1.5}`},
		{name: "info with empty object", method: "GET", path: "/vm", body: "{}", wantStatus: 200,
			wantBody: `{"state":"running","vcpus":2,"memory_mib":512,"balloon":{"size_mib":0,"actual_mib":0},"uptime_s":1.5}`},
		{name: "balloon", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 256}`, wantStatus: 204,
			check: func(t *testing.T, f *fakeVM) { assert.Equal(t, uint64(256*MiB), f.balloon) }},
		{name: "balloon zero", setup: func(f *fakeVM) { f.balloon = 100 * MiB }, method: "PUT", path: "/vm/balloon",
			body: `{"size_mib":0}`, wantStatus: 204,
			check: func(t *testing.T, f *fakeVM) { assert.Zero(t, f.balloon) }},
		{name: "balloon all memory", method: "PUT", path: "/vm/balloon", body: "\n{\"size_mib\":512}\n", wantStatus: 204,
			check: func(t *testing.T, f *fakeVM) { assert.Equal(t, uint64(512*MiB), f.balloon) }},
		{name: "balloon stats", method: "GET", path: "/vm/balloon/stats", wantStatus: 200,
			wantBody: `{"stats":{"free_memory":104857600},"updated_at":"2025-01-02T03:04:05Z","host_rss_bytes":314572800}`},
		{name: "pause", method: "PUT", path: "/vm/pause", wantStatus: 204,
			check: func(t *testing.T, f *fakeVM) { assert.Equal(t, StatePaused, f.state) }},
		{name: "pause with empty object", method: "PUT", path: "/vm/pause", body: " { } ", wantStatus: 204,
			check: func(t *testing.T, f *fakeVM) { assert.Equal(t, StatePaused, f.state) }},
		{name: "resume", setup: func(f *fakeVM) { f.state = StatePaused }, method: "PUT", path: "/vm/resume", wantStatus: 204,
			check: func(t *testing.T, f *fakeVM) { assert.Equal(t, StateRunning, f.state) }},
		{name: "snapshot", setup: func(f *fakeVM) { f.state = StatePaused }, method: "PUT", path: "/vm/snapshot",
			body: `{"path": "/srv/snap/../snap1"}`, wantStatus: 204,
			check: func(t *testing.T, f *fakeVM) { assert.Equal(t, []string{"snapshot /srv/snap1"}, f.calls) }},
		{name: "snapshot of a running VM", method: "PUT", path: "/vm/snapshot", body: `{"path": "/srv/snap1"}`, wantStatus: 409,
			wantBody: `{"error":"the machine's state does not allow this"}`},
		{name: "snapshot without a path", setup: func(f *fakeVM) { f.state = StatePaused }, method: "PUT", path: "/vm/snapshot",
			body: `{}`, wantStatus: 400, wantBody: `{"error":"the body needs \"path\", the snapshot folder's absolute path"}`},
		{name: "snapshot to a relative path", setup: func(f *fakeVM) { f.state = StatePaused }, method: "PUT", path: "/vm/snapshot",
			body: `{"path": "snap"}`, wantStatus: 400, wantBody: `{"error":"the body needs \"path\", the snapshot folder's absolute path"}`},
		{name: "snapshot to a number", setup: func(f *fakeVM) { f.state = StatePaused }, method: "PUT", path: "/vm/snapshot",
			body: `{"path": 7}`, wantStatus: 400, wantBody: `{"error":"the body needs \"path\", the snapshot folder's absolute path"}`},
		{name: "shutdown", method: "PUT", path: "/vm/shutdown", wantStatus: 204,
			check: func(t *testing.T, f *fakeVM) { assert.Equal(t, []string{"shutdown"}, f.calls) }},
		{name: "stop", setup: func(f *fakeVM) { f.state = StatePaused }, method: "PUT", path: "/vm/stop", wantStatus: 204,
			check: func(t *testing.T, f *fakeVM) { assert.Equal(t, StateStopped, f.state) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeVM()
			if tt.setup != nil {
				tt.setup(f)
			}
			_, sock := startServer(t, f)
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			a := send(t, sock, tt.method, tt.path, body, false)
			require.Equal(t, tt.wantStatus, a.status, "body %q", a.body)
			if tt.wantBody == "" {
				assert.Empty(t, a.body)
			} else {
				assert.Equal(t, "application/json", a.header.Get("Content-Type"))
				assert.JSONEq(t, tt.wantBody, string(a.body))
			}
			if tt.check != nil {
				tt.check(t, f)
			}
		})
	}
}

func TestRequestErrors(t *testing.T) {
	big := strings.Repeat(" ", MaxBodyBytes) + "{}"
	tests := []struct {
		name         string
		setup        func(*fakeVM)
		method, path string
		body         string
		chunked      bool
		wantStatus   int
		wantMsg      string
		wantAllow    string
		vmCalled     bool
	}{
		// 400: the body.
		{name: "invalid JSON", method: "PUT", path: "/vm/balloon", body: `{"size_mib":`, wantStatus: 400, wantMsg: "not valid JSON"},
		{name: "unquoted key", method: "PUT", path: "/vm/balloon", body: `{size_mib: 1}`, wantStatus: 400, wantMsg: "not valid JSON"},
		{name: "trailing comma", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 1,}`, wantStatus: 400, wantMsg: "not valid JSON"},
		{name: "array", method: "PUT", path: "/vm/balloon", body: `[1]`, wantStatus: 400, wantMsg: "must be a JSON object"},
		{name: "null body", method: "PUT", path: "/vm/balloon", body: `null`, wantStatus: 400, wantMsg: "must be a JSON object"},
		{name: "bare number", method: "PUT", path: "/vm/balloon", body: `256`, wantStatus: 400, wantMsg: "must be a JSON object"},
		{name: "unknown field", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 1, "deflate": true}`, wantStatus: 400, wantMsg: `unknown field "deflate" (known: "size_mib")`},
		{name: "field in other case", method: "PUT", path: "/vm/balloon", body: `{"SIZE_MIB": 1}`, wantStatus: 400, wantMsg: `unknown field "SIZE_MIB"`},
		{name: "duplicate field", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 1, "size_mib": 2}`, wantStatus: 400, wantMsg: "appears twice"},
		{name: "trailing object", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 1}{}`, wantStatus: 400, wantMsg: "unexpected data after"},
		{name: "trailing garbage", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 1} x`, wantStatus: 400, wantMsg: "unexpected data after"},
		{name: "no body", method: "PUT", path: "/vm/balloon", wantStatus: 400, wantMsg: "needs a JSON body"},
		{name: "missing size", method: "PUT", path: "/vm/balloon", body: `{}`, wantStatus: 400, wantMsg: `needs "size_mib"`},
		// 400: the value.
		{name: "negative", method: "PUT", path: "/vm/balloon", body: `{"size_mib": -1}`, wantStatus: 400, wantMsg: "size_mib -1 is negative"},
		{name: "fraction", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 1.5}`, wantStatus: 400, wantMsg: "not a whole number"},
		{name: "point zero", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 1.0}`, wantStatus: 400, wantMsg: "not a whole number"},
		{name: "exponent", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 1e2}`, wantStatus: 400, wantMsg: "not a whole number"},
		{name: "string", method: "PUT", path: "/vm/balloon", body: `{"size_mib": "256"}`, wantStatus: 400, wantMsg: "must be a number"},
		{name: "null size", method: "PUT", path: "/vm/balloon", body: `{"size_mib": null}`, wantStatus: 400, wantMsg: "must be a number"},
		{name: "larger than RAM", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 513}`, wantStatus: 400, wantMsg: "larger than the guest's memory of 512 MiB"},
		{name: "bytes overflow", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 17592186044416}`, wantStatus: 400, wantMsg: "too large"},
		{name: "beyond uint64", method: "PUT", path: "/vm/balloon", body: `{"size_mib": 99999999999999999999999}`, wantStatus: 400, wantMsg: "too large"},
		{name: "VM says invalid", setup: func(f *fakeVM) { f.err = fmt.Errorf("keep 64 MiB for the guest: %w", ErrInvalid) },
			method: "PUT", path: "/vm/balloon", body: `{"size_mib": 500}`, wantStatus: 400, wantMsg: "keep 64 MiB", vmCalled: true},
		{name: "action with text", method: "PUT", path: "/vm/pause", body: "now please", wantStatus: 400, wantMsg: "not valid JSON"},
		{name: "action with field", method: "PUT", path: "/vm/stop", body: `{"force": true}`, wantStatus: 400, wantMsg: "takes no fields"},
		{name: "action with array", method: "PUT", path: "/vm/shutdown", body: `[]`, wantStatus: 400, wantMsg: "must be a JSON object"},
		{name: "GET with body", method: "GET", path: "/vm", body: `{"x": 1}`, wantStatus: 400, wantMsg: "unknown field"},
		{name: "query", method: "GET", path: "/vm?verbose=1", wantStatus: 400, wantMsg: "no query parameters"},
		// 404, 405.
		{name: "root", method: "GET", path: "/", wantStatus: 404, wantMsg: `no endpoint "/"`},
		{name: "unknown", method: "GET", path: "/vm/snapshots", wantStatus: 404, wantMsg: "no endpoint"},
		{name: "trailing slash", method: "GET", path: "/vm/", wantStatus: 404, wantMsg: "no endpoint"},
		{name: "POST info", method: "POST", path: "/vm", wantStatus: 405, wantMsg: "use GET", wantAllow: "GET"},
		{name: "GET pause", method: "GET", path: "/vm/pause", wantStatus: 405, wantMsg: "use PUT", wantAllow: "PUT"},
		{name: "DELETE balloon", method: "DELETE", path: "/vm/balloon", wantStatus: 405, wantAllow: "PUT"},
		{name: "PUT stats", method: "PUT", path: "/vm/balloon/stats", body: "{}", wantStatus: 405, wantAllow: "GET"},
		{name: "POST metrics", method: "POST", path: "/metrics", wantStatus: 405, wantAllow: "GET"},
		{name: "metrics query", method: "GET", path: "/metrics?name=x", wantStatus: 400, wantMsg: "no query parameters"},
		// 413.
		{name: "large body", method: "PUT", path: "/vm/balloon", body: big, wantStatus: 413, wantMsg: "larger than 65536 bytes"},
		{name: "large chunked body", method: "PUT", path: "/vm/pause", body: big, chunked: true, wantStatus: 413, wantMsg: "larger than"},
		// 409.
		{name: "pause paused", setup: func(f *fakeVM) { f.state = StatePaused }, method: "PUT", path: "/vm/pause", wantStatus: 409, wantMsg: "state does not allow", vmCalled: true},
		{name: "resume running", method: "PUT", path: "/vm/resume", wantStatus: 409, wantMsg: "state does not allow", vmCalled: true},
		{name: "pause stopped", setup: func(f *fakeVM) { f.state = StateStopped }, method: "PUT", path: "/vm/pause", wantStatus: 409, wantMsg: "not running", vmCalled: true},
		{name: "balloon without device", setup: func(f *fakeVM) { f.noBalloon = true }, method: "PUT", path: "/vm/balloon", body: `{"size_mib": 1}`, wantStatus: 409, wantMsg: "no balloon device", vmCalled: true},
		{name: "stats without device", setup: func(f *fakeVM) { f.noBalloon = true }, method: "GET", path: "/vm/balloon/stats", wantStatus: 409, wantMsg: "no balloon device", vmCalled: true},
		// 500.
		{name: "internal", setup: func(f *fakeVM) { f.err = errors.New("KVM_SET_USER_MEMORY_REGION: bad address") }, method: "PUT", path: "/vm/shutdown", wantStatus: 500, wantMsg: "bad address", vmCalled: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeVM()
			if tt.setup != nil {
				tt.setup(f)
			}
			_, sock := startServer(t, f)
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			a := send(t, sock, tt.method, tt.path, body, tt.chunked)
			assert.Equal(t, tt.wantStatus, a.status, "body %q", a.body)
			assert.Contains(t, errorText(t, a), tt.wantMsg)
			assert.Equal(t, tt.wantAllow, a.header.Get("Allow"))
			if !tt.vmCalled {
				assert.Empty(t, f.Calls(), "a refused request reached the VM")
			}
		})
	}
}

func TestPanicIsA500(t *testing.T) {
	_, sock := startServer(t, panicVM{newFakeVM()})
	a := send(t, sock, "PUT", "/vm/pause", nil, false)
	assert.Equal(t, 500, a.status)
	assert.Contains(t, errorText(t, a), "internal error")
	// The server is still there.
	assert.Equal(t, 200, send(t, sock, "GET", "/vm", nil, false).status)
}

type panicVM struct{ *fakeVM }

func (panicVM) Pause() error { panic("bug") }

func TestSocketModeIs0600(t *testing.T) {
	for _, mask := range []int{0, 0o022, 0o277} {
		t.Run(fmt.Sprintf("umask %03o", mask), func(t *testing.T) {
			old := unix.Umask(mask) // this package's tests are not parallel
			t.Cleanup(func() { unix.Umask(old) })
			_, sock := startServer(t, newFakeVM())
			fi, err := os.Lstat(sock)
			require.NoError(t, err)
			assert.Equal(t, fs.ModeSocket|0o600, fi.Mode())
			assert.Equal(t, 200, send(t, sock, "GET", "/vm", nil, false).status)
		})
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, ln.Close()) // a dead server's socket file stays
	require.FileExists(t, path)

	s := NewServer(newFakeVM(), nil)
	require.NoError(t, s.Listen(path))
	go s.Serve(context.Background())
	defer s.Close()
	assert.Equal(t, 200, send(t, path, "GET", "/vm", nil, false).status)
}

func TestLiveSocketIsRefused(t *testing.T) {
	first, path := startServer(t, newFakeVM())
	second := NewServer(newFakeVM(), nil)
	err := second.Listen(path)
	require.ErrorIs(t, err, ErrSocketInUse)
	require.NoError(t, second.Close())
	assert.Equal(t, path, first.Path())
	assert.Equal(t, 200, send(t, path, "GET", "/vm", nil, false).status, "the first server must keep its socket")
}

func TestListenRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(file, []byte("keep me"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	tests := []struct {
		name, path, wantMsg string
	}{
		{"regular file", file, "is not a socket"},
		{"directory", filepath.Join(dir, "d"), "is not a socket"},
		{"missing directory", filepath.Join(dir, "nope", "api.sock"), "no such file"},
		{"empty", "", "empty socket path"},
		{"too long", filepath.Join(dir, strings.Repeat("x", 120)), "longer than the 107"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := NewServer(newFakeVM(), nil).Listen(tt.path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantMsg)
		})
	}
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, "keep me", string(b))
}

func TestCloseRemovesSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	s := NewServer(newFakeVM(), nil)
	require.NoError(t, s.Listen(path))
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	require.Equal(t, 200, send(t, path, "GET", "/vm", nil, false).status)
	require.NoError(t, s.Close())
	require.NoError(t, <-done)
	assert.NoFileExists(t, path)
	require.NoError(t, s.Close(), "a second Close is harmless")
	assert.Error(t, s.Listen(path), "a closed server stays closed")
}

func TestCloseWithoutServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	s := NewServer(newFakeVM(), nil)
	require.NoError(t, s.Listen(path))
	require.NoError(t, s.Close())
	assert.NoFileExists(t, path)
	assert.NoError(t, s.Serve(context.Background()), "Serve after Close returns at once")
}

func TestCloseLeavesAReplacedSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	s := NewServer(newFakeVM(), nil)
	require.NoError(t, s.Listen(path))
	// Someone removed the socket and another server took the path.
	require.NoError(t, os.Remove(path))
	other := NewServer(newFakeVM(), nil)
	require.NoError(t, other.Listen(path))
	defer other.Close()
	require.NoError(t, s.Close())
	assert.FileExists(t, path)
}

func TestServeEndsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	s := NewServer(newFakeVM(), nil)
	require.NoError(t, s.Listen(path))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	require.Equal(t, 200, send(t, path, "GET", "/vm", nil, false).status)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	assert.NoFileExists(t, path)
}

func TestServeMisuse(t *testing.T) {
	s := NewServer(newFakeVM(), nil)
	assert.ErrorContains(t, s.Serve(context.Background()), "before Listen")
	path := filepath.Join(t.TempDir(), "api.sock")
	require.NoError(t, s.Listen(path))
	defer s.Close()
	assert.ErrorContains(t, s.Listen(path), "already listening")
}

// stuckVM's Pause never returns until released.
type stuckVM struct {
	*fakeVM
	entered, release chan struct{}
}

func (v stuckVM) Pause() error { close(v.entered); <-v.release; return nil }

func TestStopIsNotBlockedByAStuckCall(t *testing.T) {
	vm := stuckVM{newFakeVM(), make(chan struct{}), make(chan struct{})}
	_, sock := startServer(t, vm)
	paused := make(chan error, 1)
	go func() { paused <- NewClient(sock).Pause(context.Background()) }()
	<-vm.entered
	// Stop answers while Pause hangs.
	assert.Equal(t, 204, send(t, sock, "PUT", "/vm/stop", nil, false).status)
	assert.Equal(t, StateStopped, vm.Info().State)
	close(vm.release)
	assert.NoError(t, <-paused)
}

func TestNetRateLimit(t *testing.T) {
	vm := newFakeVM().withNet("tap0")
	_, sock := startServer(t, vm)
	a := send(t, sock, http.MethodPatch, "/vm/net/tap0", []byte(`{"rx": {"bytes": {"rate": 1000000, "burst": 100000}}}`), false)
	require.Equal(t, http.StatusNoContent, a.status, "%s", a.body)
	a = send(t, sock, http.MethodPatch, "/vm/net/tap0", []byte(`{"tx": {"packets": {"rate": 100}}}`), false)
	require.Equal(t, http.StatusNoContent, a.status, "%s", a.body)
	vm.mu.Lock()
	assert.Equal(t, RateLimit{
		RX: &Limit{Bytes: Bucket{Rate: 1000000, Burst: 100000}},
		TX: &Limit{Packets: Bucket{Rate: 100}},
	}, vm.nets["tap0"], "each PATCH changes the directions it names")
	vm.mu.Unlock()

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		text                     string
	}{
		{"unknown device", http.MethodPatch, "/vm/net/tap9", `{"rx": {}}`, http.StatusNotFound, "no such device"},
		{"no id", http.MethodPatch, "/vm/net/", `{"rx": {}}`, http.StatusNotFound, `no endpoint "/vm/net/"`},
		{"nested path", http.MethodPatch, "/vm/net/tap0/x", `{"rx": {}}`, http.StatusNotFound, `no endpoint "/vm/net/tap0/x"`},
		{"wrong method", http.MethodPut, "/vm/net/tap0", `{"rx": {}}`, http.StatusMethodNotAllowed, "use PATCH"},
		{"empty body", http.MethodPatch, "/vm/net/tap0", ``, http.StatusBadRequest, "needs a JSON body"},
		{"unknown direction", http.MethodPatch, "/vm/net/tap0", `{"in": {}}`, http.StatusBadRequest, `unknown field "in"`},
		{"unknown bucket", http.MethodPatch, "/vm/net/tap0", `{"rx": {"ops": {}}}`, http.StatusBadRequest, `rx: unknown field "ops"`},
		{"negative rate", http.MethodPatch, "/vm/net/tap0", `{"rx": {"bytes": {"rate": -1}}}`, http.StatusBadRequest, "rx.bytes.rate must be a whole number"},
		{"fractional burst", http.MethodPatch, "/vm/net/tap0", `{"tx": {"packets": {"rate": 1, "burst": 1.5}}}`, http.StatusBadRequest, "tx.packets.burst must be a whole number"},
		{"rate as string", http.MethodPatch, "/vm/net/tap0", `{"tx": {"packets": {"rate": "1"}}}`, http.StatusBadRequest, "tx.packets.rate must be a whole number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := send(t, sock, tc.method, tc.path, []byte(tc.body), false)
			assert.Equal(t, tc.status, a.status)
			assert.Contains(t, errorText(t, a), tc.text)
		})
	}
}

// slowPauseVM pauses once release is closed, as a machine whose disks
// take long to quiesce.
type slowPauseVM struct {
	*fakeVM
	release chan struct{}
}

func (v slowPauseVM) Pause() error { <-v.release; return v.fakeVM.Pause() }

func TestPauseOfAClientThatWentAwayIsUndone(t *testing.T) {
	vm := slowPauseVM{newFakeVM(), make(chan struct{})}
	_, sock := startServer(t, vm)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	cl := NewClient(sock)
	defer cl.Close()
	assert.ErrorIs(t, cl.Pause(ctx), context.DeadlineExceeded)
	// The server learns of the closed connection by reading it, in a
	// moment: a real pause lasts longer than that.
	time.Sleep(200 * time.Millisecond)
	close(vm.release)
	assert.Eventually(t, func() bool { return vm.Info().State == StateRunning && len(vm.Calls()) == 2 },
		5*time.Second, 10*time.Millisecond, "nobody is left to resume it: the server does")
	assert.Equal(t, []string{"pause", "resume"}, vm.Calls())
}

func TestPauseLease(t *testing.T) {
	vm := newFakeVM()
	_, sock := startServer(t, vm)
	cl := NewClient(sock)
	defer cl.Close()
	ctx := context.Background()

	// Not renewed, the lease runs out and the machine runs again.
	start := time.Now()
	require.NoError(t, cl.PauseLease(ctx, time.Second))
	assert.Equal(t, StatePaused, vm.Info().State)
	require.Eventually(t, func() bool { return vm.Info().State == StateRunning }, 5*time.Second, 10*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(start), time.Second)
	assert.Equal(t, []string{"pause", "resume"}, vm.Calls())

	// Renewed, it stays paused past the first lease.
	require.NoError(t, cl.PauseLease(ctx, time.Second))
	for range 4 {
		time.Sleep(400 * time.Millisecond)
		require.NoError(t, cl.RenewLease(ctx, time.Second))
		assert.Equal(t, StatePaused, vm.Info().State)
	}
	// Resumed, the lease is gone: a later pause without one stays.
	require.NoError(t, cl.Resume(ctx))
	var apiErr *Error
	require.ErrorAs(t, cl.RenewLease(ctx, time.Second), &apiErr)
	assert.Equal(t, http.StatusConflict, apiErr.StatusCode)
	assert.Contains(t, apiErr.Message, "no pause lease to renew")
	require.NoError(t, cl.Pause(ctx))
	time.Sleep(1500 * time.Millisecond)
	assert.Equal(t, StatePaused, vm.Info().State)
	assert.Equal(t, []string{"pause", "resume", "pause", "resume", "pause"}, vm.Calls())
	require.ErrorAs(t, cl.RenewLease(ctx, time.Second), &apiErr, "a pause without a lease is not given one")
	assert.Equal(t, http.StatusConflict, apiErr.StatusCode)
}

func TestPauseLeaseRefusesBadValues(t *testing.T) {
	vm := newFakeVM()
	_, sock := startServer(t, vm)
	for _, tc := range []struct{ body, text string }{
		{`{"lease_s": 0}`, "lease_s must be from 1 to 86400 seconds"},
		{`{"lease_s": 86401}`, "lease_s must be from 1 to 86400 seconds"},
		{`{"lease_s": -1}`, "lease_s must be a whole number"},
		{`{"lease_s": 1.5}`, "lease_s must be a whole number"},
		{`{"lease_s": "5"}`, "lease_s must be a whole number"},
		{`{"renew": true}`, "renew needs lease_s"},
		{`{"lease_s": 5, "renew": 1}`, "renew must be true or false"},
		{`{"lease": 5}`, `unknown field "lease"`},
	} {
		t.Run(tc.body, func(t *testing.T) {
			a := send(t, sock, "PUT", "/vm/pause", []byte(tc.body), false)
			assert.Equal(t, http.StatusBadRequest, a.status)
			assert.Contains(t, errorText(t, a), tc.text)
		})
	}
	assert.Empty(t, vm.Calls(), "nothing reached the machine")
}

func TestDiskRateLimit(t *testing.T) {
	vm := newFakeVM().withDisks(2)
	_, sock := startServer(t, vm)
	a := send(t, sock, http.MethodPatch, "/vm/disk/1", []byte(`{"bytes": {"rate": 104857600, "burst": 1048576}}`), false)
	require.Equal(t, http.StatusNoContent, a.status, "%s", a.body)
	a = send(t, sock, http.MethodPatch, "/vm/disk/disk1", []byte(`{"ops": {"rate": 1000}}`), false)
	require.Equal(t, http.StatusNoContent, a.status, "%s", a.body)
	a = send(t, sock, http.MethodPatch, "/vm/disk/0", []byte(`{}`), false)
	require.Equal(t, http.StatusNoContent, a.status, "%s", a.body)
	vm.mu.Lock()
	assert.Equal(t, []DiskRateLimit{{}, {Bytes: &Bucket{Rate: 104857600, Burst: 1048576}, Ops: &Bucket{Rate: 1000}}},
		vm.disks, "each PATCH changes the buckets it names")
	vm.mu.Unlock()

	a = send(t, sock, http.MethodGet, "/vm", nil, false)
	require.Equal(t, http.StatusOK, a.status)
	assert.Contains(t, string(a.body), `"disks":[{"id":"0","path":"/img/0","serial":"disk0","rate_limit":{}},`+
		`{"id":"1","path":"/img/1","serial":"disk1","rate_limit":{"bytes":{"rate":104857600,"burst":1048576},"ops":{"rate":1000,"burst":0}}}]`)

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		text                     string
	}{
		{"unknown disk", http.MethodPatch, "/vm/disk/2", `{}`, http.StatusNotFound, "no such device"},
		{"no id", http.MethodPatch, "/vm/disk/", `{}`, http.StatusNotFound, `no endpoint "/vm/disk/"`},
		{"nested path", http.MethodPatch, "/vm/disk/0/x", `{}`, http.StatusNotFound, `no endpoint "/vm/disk/0/x"`},
		{"wrong method", http.MethodGet, "/vm/disk/0", ``, http.StatusMethodNotAllowed, "use PATCH"},
		{"empty body", http.MethodPatch, "/vm/disk/0", ``, http.StatusBadRequest, "needs a JSON body"},
		{"net's bucket", http.MethodPatch, "/vm/disk/0", `{"packets": {}}`, http.StatusBadRequest, `unknown field "packets"`},
		{"unknown bucket field", http.MethodPatch, "/vm/disk/0", `{"ops": {"size": 1}}`, http.StatusBadRequest, `ops: unknown field "size"`},
		{"negative rate", http.MethodPatch, "/vm/disk/0", `{"bytes": {"rate": -1}}`, http.StatusBadRequest, "bytes.rate must be a whole number"},
		{"fractional burst", http.MethodPatch, "/vm/disk/0", `{"ops": {"rate": 1, "burst": 0.5}}`, http.StatusBadRequest, "ops.burst must be a whole number"},
		{"bucket not an object", http.MethodPatch, "/vm/disk/0", `{"ops": 5}`, http.StatusBadRequest, "ops: "},
		{"rate too large", http.MethodPatch, "/vm/disk/0", `{"ops": {"rate": 18446744073709551616}}`, http.StatusBadRequest, "ops.rate must be a whole number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := send(t, sock, tc.method, tc.path, []byte(tc.body), false)
			assert.Equal(t, tc.status, a.status)
			assert.Contains(t, errorText(t, a), tc.text)
		})
	}
	vm.mu.Lock()
	assert.Equal(t, DiskRateLimit{}, vm.disks[0], "refused PATCHes change nothing")
	vm.mu.Unlock()
}
