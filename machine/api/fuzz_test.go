package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzHandler feeds arbitrary requests to the handler in process: it must
// never panic (a panic is answered 500, and the fake VM never fails) and
// must always answer either success or a JSON error with a known status.
// Seeds are in testdata/fuzz/FuzzHandler and below.
func FuzzHandler(f *testing.F) {
	for _, s := range []struct {
		method, path, body string
	}{
		{"GET", "/vm", ""},
		{"PUT", "/vm/balloon", `{"size_mib": 256}`},
		{"PUT", "/vm/balloon", `{"size_mib": -1}`},
		{"PUT", "/vm/balloon", `{"size_mib": 1.5e3}`},
		{"PUT", "/vm/balloon", `{"size_mib": 1, "size_mib": 2}`},
		{"PUT", "/vm/balloon", `{"size_mib": 1}{}`},
		{"PUT", "/vm/balloon", `{"size_mib": "1"}`},
		{"PUT", "/vm/balloon", `{"size_mib": 18446744073709551616}`},
		{"PUT", "/vm/pause", "{}"},
		{"PUT", "/vm/pause", `{"lease_s": 30}`},
		{"PUT", "/vm/pause", `{"lease_s": 30, "renew": true}`},
		{"PUT", "/vm/pause", `{"lease_s": 0, "renew": false}`},
		{"PUT", "/vm/resume", `{"a":[1,{"b":null}]}`},
		{"PUT", "/vm/snapshot", `{"path": "/tmp/s"}`},
		{"PUT", "/vm/snapshot", `{"path": ""}`},
		{"GET", "/vm/balloon/stats", ""},
		{"GET", "/metrics", "ignored"},
		{"POST", "/vm/stop", ""},
		{"GET", "/nope", "\xff"},
		{"PATCH", "/vm/disk/0", `{"bytes": {"rate": 1048576, "burst": 4096}, "ops": {"rate": 10}}`},
		{"PATCH", "/vm/disk/disk1", `{"ops": {"rate": -1}}`},
		{"PATCH", "/vm/disk/9", `{}`},
	} {
		for state := range uint8(4) {
			f.Add(s.method, s.path, []byte(s.body), state)
		}
	}
	f.Fuzz(func(t *testing.T, method, path string, body []byte, state uint8) {
		vm := newFakeVM().withDisks(2)
		vm.state = []string{StateRunning, StatePaused, StateStopped, StateRunning}[state%4]
		vm.noBalloon = state&4 != 0
		req := httptest.NewRequest(http.MethodGet, "/", bytes.NewReader(body))
		req.Method, req.URL.Path = method, path
		w := httptest.NewRecorder()
		NewHandler(vm, nil).ServeHTTP(w, req)

		resp := w.Result()
		switch resp.StatusCode {
		case http.StatusNoContent:
			assert.Empty(t, w.Body.Bytes())
			return
		case http.StatusOK:
			if path == "/metrics" {
				_, err := ParseMetrics(w.Body.Bytes())
				assert.NoError(t, err, "%q", w.Body.Bytes())
				return
			}
			assert.True(t, json.Valid(w.Body.Bytes()), "%q", w.Body.Bytes())
			return
		case http.StatusMethodNotAllowed:
			assert.NotEmpty(t, resp.Header.Get("Allow"))
		}
		require.True(t, slices.Contains([]int{400, 404, 405, 409, 413}, resp.StatusCode),
			"status %d, body %q", resp.StatusCode, w.Body.Bytes())
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		var e map[string]string
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &e), "%q", w.Body.Bytes())
		assert.NotEmpty(t, e["error"])
		assert.Len(t, e, 1)
	})
}
