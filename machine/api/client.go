package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// maxResponseBytes bounds what the client reads of an answer.
const maxResponseBytes = 1 << 20

// Error is the server's answer to a request it refused or failed.
type Error struct {
	StatusCode int    // HTTP status: 400, 404, 405, 409, 413, 500
	Message    string // the server's "error" text
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (%d %s)", e.Message, e.StatusCode, http.StatusText(e.StatusCode))
}

// Client talks to a Server over its unix socket. Each call's ctx bounds
// it; a Client may be used from several goroutines.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client for the server listening at socketPath.
func NewClient(socketPath string) *Client {
	return &Client{
		path: socketPath,
		http: &http.Client{Transport: &http.Transport{
			// No Proxy: HTTP_PROXY must not redirect a unix socket.
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socketPath)
			},
			MaxIdleConns:       1,
			DisableCompression: true,
		}},
	}
}

// Close drops the client's idle connection.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Info returns the machine's state, size and uptime.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var i Info
	err := c.do(ctx, http.MethodGet, "/vm", nil, &i)
	return i, err
}

// SetBalloon sets the balloon's target size in MiB; 0 deflates it.
func (c *Client) SetBalloon(ctx context.Context, mib uint64) error {
	return c.do(ctx, http.MethodPut, "/vm/balloon", struct {
		SizeMiB uint64 `json:"size_mib"`
	}{mib}, nil)
}

// BalloonStats returns the guest's latest memory statistics.
func (c *Client) BalloonStats(ctx context.Context) (BalloonStats, error) {
	var s BalloonStats
	err := c.do(ctx, http.MethodGet, "/vm/balloon/stats", nil, &s)
	return s, err
}

// SetNetRateLimit changes the rate limits of the network device on TAP
// id.
func (c *Client) SetNetRateLimit(ctx context.Context, id string, l RateLimit) error {
	return c.do(ctx, http.MethodPatch, netPrefix+url.PathEscape(id), l, nil)
}

// SetDiskRateLimit changes the rate limit of disk id, its index or its
// serial.
func (c *Client) SetDiskRateLimit(ctx context.Context, id string, l DiskRateLimit) error {
	return c.do(ctx, http.MethodPatch, diskPrefix+url.PathEscape(id), l, nil)
}

// Pause stops the guest's vCPUs.
func (c *Client) Pause(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/vm/pause", nil, nil)
}

// PauseLease stops the guest's vCPUs for lease (whole seconds, rounded
// up): the VMM resumes the guest then unless RenewLease or Resume came
// first.
func (c *Client) PauseLease(ctx context.Context, lease time.Duration) error {
	return c.do(ctx, http.MethodPut, "/vm/pause", leaseBody{Seconds: leaseSeconds(lease)}, nil)
}

// RenewLease makes a pause made with PauseLease last lease from now; a
// 409 Error says the pause is over (its lease ran out, or a resume ended
// it) or had no lease.
func (c *Client) RenewLease(ctx context.Context, lease time.Duration) error {
	return c.do(ctx, http.MethodPut, "/vm/pause", leaseBody{Seconds: leaseSeconds(lease), Renew: true}, nil)
}

type leaseBody struct {
	Seconds uint64 `json:"lease_s"`
	Renew   bool   `json:"renew,omitempty"`
}

func leaseSeconds(d time.Duration) uint64 {
	return uint64((max(d, 0) + time.Second - 1) / time.Second)
}

// Snapshot saves the paused guest into the folder dir (an absolute path
// on the VMM's host).
func (c *Client) Snapshot(ctx context.Context, dir string) error {
	return c.do(ctx, http.MethodPut, "/vm/snapshot", struct {
		Path string `json:"path"`
	}{dir}, nil)
}

// Resume restarts a paused guest.
func (c *Client) Resume(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/vm/resume", nil, nil)
}

// Shutdown presses the ACPI power button; it returns once pressed, not
// when the guest is off.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/vm/shutdown", nil, nil)
}

// Stop ends the machine at once.
func (c *Client) Stop(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/vm/stop", nil, nil)
}

// Metrics returns the machine's metrics in Prometheus' text format.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var text []byte
	err := c.do(ctx, http.MethodGet, "/metrics", nil, &text)
	return text, err
}

// ParseMetrics parses Prometheus' text format, as Metrics returns it, into
// metric families by name.
func ParseMetrics(text []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("api: parsing metrics: %w", err)
	}
	return fams, nil
}

// do sends in (if not nil) as JSON and decodes a 200 answer into out; a
// *[]byte out takes the answer as it is.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("api: encoding %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://gvmm"+path, body)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // drop the made-up URL
		}
		return fmt.Errorf("api: %s %s via %s: %w", method, path, c.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("api: %s %s: reading the answer: %w", method, path, err)
	}
	if len(b) > maxResponseBytes {
		return fmt.Errorf("api: %s %s: the answer is larger than %d bytes", method, path, maxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return responseError(resp.StatusCode, b)
	}
	switch out := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*out = b
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("api: %s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// responseError makes an *Error of an error answer, which should be
// {"error": "..."} but may be anything if something else answers.
func responseError(status int, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := ""
	if json.Unmarshal(body, &e) == nil {
		msg = e.Error
	}
	if msg == "" {
		msg = strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
	}
	if msg == "" {
		msg = "the server gave no reason"
	}
	return &Error{StatusCode: status, Message: msg}
}
