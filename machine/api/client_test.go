package api

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClientRoundTrip(t *testing.T) {
	f := newFakeVM().withNet("tap0").withDisks(1)
	_, sock := startServer(t, f)
	c := NewClient(sock)
	defer c.Close()
	ctx := context.Background()

	info, err := c.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, f.Info(), info)

	require.NoError(t, c.SetBalloon(ctx, 128))
	require.NoError(t, c.SetNetRateLimit(ctx, "tap0", RateLimit{TX: &Limit{Packets: Bucket{Rate: 10}}}))
	info, err = c.Info(ctx)
	require.NoError(t, err)
	require.NotNil(t, info.Balloon)
	assert.Equal(t, uint64(128), info.Balloon.RequestedMiB)
	require.Len(t, info.Nets, 1)
	assert.Equal(t, RateLimit{TX: &Limit{Packets: Bucket{Rate: 10}}}, info.Nets[0].RateLimit)

	require.NoError(t, c.SetDiskRateLimit(ctx, "disk0", DiskRateLimit{Ops: &Bucket{Rate: 500, Burst: 50}}))
	var apiErr *Error
	require.ErrorAs(t, c.SetDiskRateLimit(ctx, "7", DiskRateLimit{}), &apiErr)
	assert.Equal(t, http.StatusNotFound, apiErr.StatusCode)
	info, err = c.Info(ctx)
	require.NoError(t, err)
	require.Len(t, info.Disks, 1)
	assert.Equal(t, DiskRateLimit{Ops: &Bucket{Rate: 500, Burst: 50}}, info.Disks[0].RateLimit)

	stats, err := c.BalloonStats(ctx)
	require.NoError(t, err)
	want, _ := f.BalloonStats()
	assert.Equal(t, want.Stats, stats.Stats)
	assert.True(t, want.UpdatedAt.Equal(stats.UpdatedAt))
	assert.Equal(t, want.HostRSSBytes, stats.HostRSSBytes)

	require.NoError(t, c.Pause(ctx))
	require.NoError(t, c.Resume(ctx))
	require.NoError(t, c.Shutdown(ctx))
	require.NoError(t, c.Stop(ctx))
	assert.Equal(t, []string{"balloon", "net tap0", "disk disk0", "disk 7", "stats", "stats", "pause", "resume", "shutdown", "stop"}, f.Calls())
}

func TestClientErrorsCarryStatusAndMessage(t *testing.T) {
	f := newFakeVM()
	f.state = StatePaused
	_, sock := startServer(t, f)
	c := NewClient(sock)
	defer c.Close()
	ctx := context.Background()
	tests := []struct {
		name       string
		call       func() error
		wantStatus int
		wantMsg    string
	}{
		{"conflict", func() error { return c.Pause(ctx) }, 409, "state does not allow"},
		{"too large", func() error { return c.SetBalloon(ctx, 1<<20) }, 400, "larger than the guest's memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			apiErr, ok := errors.AsType[*Error](err)
			require.True(t, ok, "%v", err)
			assert.Equal(t, tt.wantStatus, apiErr.StatusCode)
			assert.Contains(t, apiErr.Message, tt.wantMsg)
			assert.Contains(t, err.Error(), tt.wantMsg)
		})
	}
}

func TestClientWithoutServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nobody.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := NewClient(path).Info(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "no such file")
}

func TestResponseError(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"json", `{"error":"no"}`, "no"},
		{"text", "404 page not found\n", "404 page not found"},
		{"empty", "", "the server gave no reason"},
		{"json without error", `{"message":"x"}`, `{"message":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := responseError(404, []byte(tt.body))
			e, ok := errors.AsType[*Error](err)
			require.True(t, ok)
			assert.Equal(t, tt.want, e.Message)
			assert.Equal(t, 404, e.StatusCode)
		})
	}
}

func TestMetrics(t *testing.T) {
	f := newFakeVM()
	_, sock := startServer(t, f)
	a := send(t, sock, "GET", "/metrics", nil, false)
	require.Equal(t, 200, a.status, "%s", a.body)
	assert.Contains(t, a.header.Get("Content-Type"), "text/plain")
	assert.Contains(t, string(a.body), "# TYPE fake_scrapes_total counter\nfake_scrapes_total 1\n")

	c := NewClient(sock)
	defer c.Close()
	text, err := c.Metrics(context.Background())
	require.NoError(t, err)
	fams, err := ParseMetrics(text)
	require.NoError(t, err)
	require.Contains(t, fams, "fake_scrapes_total")
	assert.Equal(t, 2.0, fams["fake_scrapes_total"].GetMetric()[0].GetCounter().GetValue(), "a second scrape")

	_, err = ParseMetrics([]byte("not metrics {"))
	assert.ErrorContains(t, err, "parsing metrics")
}
