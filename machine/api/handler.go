package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MaxBodyBytes bounds a request body; a larger one is answered 413.
const MaxBodyBytes = 64 << 10

// endpoint is one path of the API: the method it answers and what it does
// with the request body. A nil result means 204 No Content. An endpoint
// that answers in a format of its own has raw instead of serve.
type endpoint struct {
	method string
	serve  func(h *handler, ctx context.Context, body []byte) (any, error)
	raw    func(h *handler, w http.ResponseWriter, r *http.Request) int
}

// devicePatches change one device among several, named by the id after
// the prefix.
var devicePatches = map[string]func(h *handler, id string, body []byte) (any, error){
	netPrefix:  (*handler).setNetRateLimit,
	diskPrefix: (*handler).setDiskRateLimit,
}

var endpoints = map[string]endpoint{
	"/vm":               {method: http.MethodGet, serve: (*handler).info},
	"/vm/balloon":       {method: http.MethodPut, serve: (*handler).setBalloon},
	"/vm/balloon/stats": {method: http.MethodGet, serve: (*handler).balloonStats},
	"/vm/pause":         {method: http.MethodPut, serve: (*handler).pause},
	"/vm/resume":        {method: http.MethodPut, serve: (*handler).resume},
	"/vm/snapshot":      {method: http.MethodPut, serve: (*handler).snapshot},
	"/vm/shutdown":      {method: http.MethodPut, serve: action((VM).Shutdown, true)},
	// Stop is the way out of a machine stuck in another call: it does
	// not wait for the lock.
	"/vm/stop": {method: http.MethodPut, serve: action(func(vm VM) error { vm.Stop(); return nil }, false)},
	// Prometheus' text (or OpenMetrics, if asked) rather than JSON.
	"/metrics": {method: http.MethodGet, raw: (*handler).metrics},
}

type handler struct {
	vm  VM
	log *slog.Logger
	mu  sync.Mutex // serialises the calls that change the machine

	// The pause's lease, under mu: leased while a pause made with one
	// lasts, lease its timer, leaseGen telling a timer that fired late
	// that a renewal or a resume replaced it.
	leased   bool
	lease    *time.Timer
	leaseGen uint64
}

// NewHandler returns the API's HTTP handler; Server serves it on a unix
// socket, tests may call it in process. A nil log discards.
func NewHandler(vm VM, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{vm: vm, log: log}
}

// requestError is a client mistake with the status that describes it.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &requestError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

// statusOf maps an error to the status it is answered with.
func statusOf(err error) int {
	var re *requestError
	switch {
	case errors.As(err, &re):
		return re.status
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNoBalloon), errors.Is(err, ErrNotRunning), errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status, err := h.serve(w, r)
	level := slog.LevelDebug
	switch {
	case status >= 500:
		level = slog.LevelError
	case status < 300 && r.Method != http.MethodGet:
		level = slog.LevelInfo // a change to the machine
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", status), slog.Duration("took", time.Since(start)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	h.log.LogAttrs(r.Context(), level, "api request", attrs...)
}

// serve answers one request and returns the status and error it answered.
func (h *handler) serve(w http.ResponseWriter, r *http.Request) (status int, err error) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("api handler panic", "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error: %v", p)
			status = writeError(w, http.StatusInternalServerError, err)
		}
	}()
	ep, ok := endpoints[r.URL.Path]
	for prefix, set := range devicePatches {
		if id, found := strings.CutPrefix(r.URL.Path, prefix); found {
			ep, ok = endpoint{method: http.MethodPatch, serve: func(h *handler, _ context.Context, body []byte) (any, error) { return set(h, id, body) }}, true
		}
	}
	if !ok {
		err := &requestError{http.StatusNotFound, fmt.Sprintf("no endpoint %q", r.URL.Path)}
		return writeError(w, err.status, err), err
	}
	if r.Method != ep.method {
		w.Header().Set("Allow", ep.method)
		err := &requestError{http.StatusMethodNotAllowed,
			fmt.Sprintf("%s %s: method not allowed, use %s", r.Method, r.URL.Path, ep.method)}
		return writeError(w, err.status, err), err
	}
	if r.URL.RawQuery != "" {
		err := badRequest("%s takes no query parameters", r.URL.Path)
		return writeError(w, http.StatusBadRequest, err), err
	}
	if ep.raw != nil {
		return ep.raw(h, w, r), nil
	}
	body, err := readBody(w, r)
	if err == nil {
		var v any
		if v, err = ep.serve(h, r.Context(), body); err == nil {
			if v == nil {
				w.WriteHeader(http.StatusNoContent)
				return http.StatusNoContent, nil
			}
			return writeJSON(w, http.StatusOK, v)
		}
	}
	return writeError(w, statusOf(err), err), err
}

// readBody reads a request body of at most MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	tooLarge := &requestError{http.StatusRequestEntityTooLarge,
		fmt.Sprintf("the request body is larger than %d bytes", MaxBodyBytes)}
	if r.ContentLength > MaxBodyBytes {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge
		}
		return nil, badRequest("reading the request body: %v", err)
	}
	return body, nil
}

// writeJSON answers v as JSON with status, or 500 if v cannot be encoded.
func writeJSON(w http.ResponseWriter, status int, v any) (int, error) {
	b, err := json.Marshal(v)
	if err != nil {
		err = fmt.Errorf("encoding the answer: %w", err)
		return writeError(w, http.StatusInternalServerError, err), err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return status, nil
}

// writeError answers {"error": err's text} with status.
func writeError(w http.ResponseWriter, status int, err error) int {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{err.Error()}) // a struct of one string always encodes
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return status
}

// metrics answers a scrape with what the VM's gatherer collects; a
// metric that fails to be collected is logged and left out, the rest
// served.
func (h *handler) metrics(w http.ResponseWriter, r *http.Request) int {
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	promhttp.HandlerFor(h.vm.Gatherer(), promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}).ServeHTTP(rec, r)
	return rec.status
}

// statusRecorder notes the status a handler answered with, for the log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(status int) {
	s.status = status
	s.ResponseWriter.WriteHeader(status)
}

func (h *handler) info(_ context.Context, body []byte) (any, error) {
	if err := decodeObject(body, nil, true); err != nil {
		return nil, err
	}
	return h.vm.Info(), nil
}

func (h *handler) balloonStats(_ context.Context, body []byte) (any, error) {
	if err := decodeObject(body, nil, true); err != nil {
		return nil, err
	}
	s, err := h.vm.BalloonStats()
	if err != nil {
		return nil, err
	}
	if s.Stats == nil {
		s.Stats = map[string]uint64{} // {} rather than null
	}
	return s, nil
}

func (h *handler) setBalloon(_ context.Context, body []byte) (any, error) {
	var size json.RawMessage
	if err := decodeObject(body, map[string]*json.RawMessage{"size_mib": &size}, false); err != nil {
		return nil, err
	}
	if size == nil {
		return nil, badRequest(`the body needs "size_mib"`)
	}
	mib, err := parseMiB(size)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if mem := h.vm.Info().MemoryMiB; mib > mem {
		return nil, badRequest("size_mib %d is larger than the guest's memory of %d MiB", mib, mem)
	}
	return nil, h.vm.SetBalloon(mib * MiB)
}

// netPrefix is the path of the network devices, each under its id.
const netPrefix = "/vm/net/"

func (h *handler) setNetRateLimit(id string, body []byte) (any, error) {
	if id == "" || strings.Contains(id, "/") {
		return nil, &requestError{http.StatusNotFound, fmt.Sprintf("no endpoint %q", netPrefix+id)}
	}
	var rx, tx json.RawMessage
	if err := decodeObject(body, map[string]*json.RawMessage{"rx": &rx, "tx": &tx}, false); err != nil {
		return nil, err
	}
	var l RateLimit
	for _, d := range []struct {
		name string
		raw  json.RawMessage
		dst  **Limit
	}{{"rx", rx, &l.RX}, {"tx", tx, &l.TX}} {
		if d.raw == nil {
			continue
		}
		lim, err := parseLimit(d.name, d.raw)
		if err != nil {
			return nil, err
		}
		*d.dst = &lim
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return nil, h.vm.SetNetRateLimit(id, l)
}

// parseLimit reads {"bytes": {"rate": N, "burst": N}, "packets": {...}},
// every field optional.
func parseLimit(name string, raw json.RawMessage) (Limit, error) {
	var bytesRaw, packetsRaw json.RawMessage
	if err := decodeObject(raw, map[string]*json.RawMessage{"bytes": &bytesRaw, "packets": &packetsRaw}, false); err != nil {
		return Limit{}, badRequest("%s: %v", name, err)
	}
	var l Limit
	var err error
	if l.Bytes, err = parseBucket(name+".bytes", bytesRaw); err != nil {
		return Limit{}, err
	}
	if l.Packets, err = parseBucket(name+".packets", packetsRaw); err != nil {
		return Limit{}, err
	}
	return l, nil
}

// parseBucket reads {"rate": N, "burst": N}, both optional whole numbers;
// nil raw is the zero Bucket.
func parseBucket(name string, raw json.RawMessage) (Bucket, error) {
	if raw == nil {
		return Bucket{}, nil
	}
	var rate, burst json.RawMessage
	if err := decodeObject(raw, map[string]*json.RawMessage{"rate": &rate, "burst": &burst}, false); err != nil {
		return Bucket{}, badRequest("%s: %v", name, err)
	}
	var b Bucket
	var err error
	if b.Rate, err = parseCount(name+".rate", rate); err != nil {
		return Bucket{}, err
	}
	if b.Burst, err = parseCount(name+".burst", burst); err != nil {
		return Bucket{}, err
	}
	return b, nil
}

// diskPrefix is the path of the disks, each under its id.
const diskPrefix = "/vm/disk/"

func (h *handler) setDiskRateLimit(id string, body []byte) (any, error) {
	if id == "" || strings.Contains(id, "/") {
		return nil, &requestError{http.StatusNotFound, fmt.Sprintf("no endpoint %q", diskPrefix+id)}
	}
	var bytesRaw, opsRaw json.RawMessage
	if err := decodeObject(body, map[string]*json.RawMessage{"bytes": &bytesRaw, "ops": &opsRaw}, false); err != nil {
		return nil, err
	}
	var l DiskRateLimit
	for _, b := range []struct {
		name string
		raw  json.RawMessage
		dst  **Bucket
	}{{"bytes", bytesRaw, &l.Bytes}, {"ops", opsRaw, &l.Ops}} {
		if b.raw == nil {
			continue
		}
		bucket, err := parseBucket(b.name, b.raw)
		if err != nil {
			return nil, err
		}
		*b.dst = &bucket
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return nil, h.vm.SetDiskRateLimit(id, l)
}

// parseCount reads an optional whole, non-negative JSON number.
func parseCount(name string, raw json.RawMessage) (uint64, error) {
	if raw == nil {
		return 0, nil
	}
	s := string(raw)
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, badRequest("%s must be a whole number from 0, not %.40s", name, s)
	}
	return v, nil
}

// MaxLease bounds a pause's lease.
const MaxLease = 24 * time.Hour

// pause pauses the machine; with {"lease_s": N} the pause lasts N seconds
// unless renewed with {"lease_s": N, "renew": true} or ended by a resume,
// so that a client that dies while the machine is paused (gvmm backup,
// killed) does not leave it paused for good.
func (h *handler) pause(ctx context.Context, body []byte) (any, error) {
	var leaseRaw, renewRaw json.RawMessage
	if err := decodeObject(body, map[string]*json.RawMessage{"lease_s": &leaseRaw, "renew": &renewRaw}, true); err != nil {
		return nil, err
	}
	secs, err := parseCount("lease_s", leaseRaw)
	if err != nil {
		return nil, err
	}
	lease := time.Duration(secs) * time.Second
	if leaseRaw != nil && (secs == 0 || lease > MaxLease) {
		return nil, badRequest("lease_s must be from 1 to %d seconds, not %d", int(MaxLease/time.Second), secs)
	}
	var renew bool
	if renewRaw != nil && json.Unmarshal(renewRaw, &renew) != nil {
		return nil, badRequest("renew must be true or false, not %.40s", renewRaw)
	}
	if renew && leaseRaw == nil {
		return nil, badRequest("renew needs lease_s")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if renew {
		if !h.leased {
			return nil, &requestError{http.StatusConflict, "no pause lease to renew: the machine was resumed, or paused without one"}
		}
		h.startLease(lease)
		return nil, nil
	}
	if err := h.vm.Pause(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		// The client went away before it learnt of the pause: nobody
		// would resume the machine.
		rerr := h.vm.Resume()
		h.log.Warn("api pause: the client went away before the answer, so the machine was resumed", "err", rerr)
		return nil, fmt.Errorf("the client went away: %w", err)
	}
	if leaseRaw != nil {
		h.startLease(lease)
	}
	return nil, nil
}

func (h *handler) resume(_ context.Context, body []byte) (any, error) {
	if err := decodeObject(body, nil, true); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.vm.Resume(); err != nil {
		return nil, err
	}
	h.endLease()
	return nil, nil
}

func (h *handler) snapshot(_ context.Context, body []byte) (any, error) {
	var raw json.RawMessage
	if err := decodeObject(body, map[string]*json.RawMessage{"path": &raw}, false); err != nil {
		return nil, err
	}
	var dir string
	if raw == nil || json.Unmarshal(raw, &dir) != nil || !filepath.IsAbs(dir) {
		return nil, badRequest(`the body needs "path", the snapshot folder's absolute path`)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return nil, h.vm.Snapshot(filepath.Clean(dir))
}

// startLease (re)starts the pause's lease; h.mu is held.
func (h *handler) startLease(d time.Duration) {
	h.endLease()
	h.leased = true
	gen := h.leaseGen
	h.lease = time.AfterFunc(d, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if !h.leased || h.leaseGen != gen {
			return // renewed or resumed as it fired
		}
		h.endLease()
		err := h.vm.Resume()
		h.log.Warn("api pause: the lease ran out without a renewal, so the machine was resumed", "lease", d, "err", err)
	})
}

// endLease drops the pause's lease, if any; h.mu is held.
func (h *handler) endLease() {
	if h.lease != nil {
		h.lease.Stop()
	}
	h.leased, h.lease = false, nil
	h.leaseGen++
}

// action is an endpoint that takes an empty body or {} and calls do,
// holding the lock if serialise.
func action(do func(VM) error, serialise bool) func(*handler, context.Context, []byte) (any, error) {
	return func(h *handler, _ context.Context, body []byte) (any, error) {
		if err := decodeObject(body, nil, true); err != nil {
			return nil, err
		}
		if serialise {
			h.mu.Lock()
			defer h.mu.Unlock()
		}
		return nil, do(h.vm)
	}
}

// parseMiB reads a size_mib value: a JSON number that is a whole,
// non-negative count of MiB whose byte count fits in a uint64.
func parseMiB(raw json.RawMessage) (uint64, error) {
	s := string(raw)
	switch {
	case strings.HasPrefix(s, "-"):
		return 0, badRequest("size_mib %s is negative", s)
	case s == "" || s[0] < '0' || s[0] > '9':
		return 0, badRequest("size_mib must be a number of MiB, not %.40s", s)
	case strings.ContainsAny(s, ".eE"):
		return 0, badRequest("size_mib %.40s is not a whole number of MiB", s)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > math.MaxUint64/MiB {
		return 0, badRequest("size_mib %.40s is too large", s)
	}
	return v, nil
}

// decodeObject parses body as a single JSON object whose keys are among
// fields, each present at most once and matched exactly (encoding/json
// would match case-insensitively and let the last duplicate win), storing
// each value's raw text; nothing may follow the object. An empty body is
// accepted when emptyOK.
func decodeObject(body []byte, fields map[string]*json.RawMessage, emptyOK bool) error {
	if len(bytes.TrimSpace(body)) == 0 {
		if emptyOK {
			return nil
		}
		return badRequest("the request needs a JSON body")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	invalid := func(err error) error { return badRequest("the body is not valid JSON: %v", err) }
	tok, err := dec.Token()
	if err != nil {
		return invalid(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return badRequest("the body must be a JSON object")
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalid(err)
		}
		key, _ := tok.(string) // the decoder yields only strings as keys
		dst, ok := fields[key]
		if !ok {
			return badRequest("unknown field %q%s", key, knownFields(fields))
		}
		if seen[key] {
			return badRequest("field %q appears twice", key)
		}
		seen[key] = true
		if err := dec.Decode(dst); err != nil {
			return invalid(err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return invalid(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("unexpected data after the JSON object")
	}
	return nil
}

func knownFields(fields map[string]*json.RawMessage) string {
	if len(fields) == 0 {
		return " (this request takes no fields)"
	}
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, strconv.Quote(k))
	}
	slices.Sort(names)
	return " (known: " + strings.Join(names, ", ") + ")"
}
