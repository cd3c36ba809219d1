// Package wiretest is the host side of the bulk transfers the vsock and
// network tests make with the guests' vsockwire services.
package wiretest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
)

const (
	dialTimeout = time.Minute
	// bulkTimeout bounds one transfer: 64 MiB under emulation take 5 to
	// 25 s; a stalled one fails soon enough for the VMM to be looked at
	// before the package's own timeout.
	bulkTimeout = 4 * time.Minute
)

// Dialer connects to one of the guest's service ports.
type Dialer func(ctx context.Context, port uint32) (net.Conn, error)

// closeWrite shuts a connection's write side (TCP, unix sockets): the
// sink reads to EOF.
func closeWrite(c net.Conn) error {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("%T cannot shut its write side", c)
	}
	return cw.CloseWrite()
}

func dial(t *testing.T, d Dialer, port uint32) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	c, err := d(ctx, port)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(bulkTimeout)))
	return c
}

// ToGuest sends n bytes of the pattern to the guest's sink and checks the
// sum it answers.
func ToGuest(t *testing.T, d Dialer, n uint64) {
	t.Helper()
	c := dial(t, d, vsockwire.PortSink)
	defer c.Close()
	start := time.Now()
	require.NoError(t, vsockwire.WritePattern(c, n))
	require.NoError(t, closeWrite(c))
	answer, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("%d %s\n", n, vsockwire.PatternSum(n)), answer)
	logRate(t, "host to guest", n, time.Since(start))
}

// FromGuest has the guest's source send n bytes and checks them.
func FromGuest(t *testing.T, d Dialer, n uint64) {
	t.Helper()
	c := dial(t, d, vsockwire.PortSource)
	defer c.Close()
	start := time.Now()
	_, err := fmt.Fprintf(c, "%d\n", n)
	require.NoError(t, err)
	got, sum, err := vsockwire.Sum(c)
	require.NoError(t, err)
	assert.Equal(t, n, got)
	assert.Equal(t, vsockwire.PatternSum(n), sum)
	logRate(t, "guest to host", n, time.Since(start))
}

func logRate(t *testing.T, what string, n uint64, took time.Duration) {
	t.Helper()
	t.Logf("%s: %d MiB in %s, %.1f MiB/s", what, n>>20, took.Round(time.Millisecond), float64(n)/(1<<20)/took.Seconds())
}

// UnixDialer is a client of a VMM's vsock socket at path: it asks for
// the guest's port with "CONNECT <port>\n" and returns the stream once
// the VMM answered "OK <host port>\n".
func UnixDialer(path string) Dialer {
	return func(ctx context.Context, port uint32) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, err
		}
		if deadline, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(deadline)
		}
		if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
			c.Close()
			return nil, err
		}
		// A byte at a time: what follows the answer is the guest's.
		var line []byte
		for one := make([]byte, 1); len(line) < 64 && !strings.HasSuffix(string(line), "\n"); line = append(line, one[0]) {
			if _, err := c.Read(one); err != nil {
				c.Close()
				return nil, fmt.Errorf("CONNECT %d: answer %q: %w", port, line, err)
			}
		}
		if !strings.HasPrefix(string(line), "OK ") {
			c.Close()
			return nil, fmt.Errorf("CONNECT %d: answer %q", port, line)
		}
		_ = c.SetDeadline(time.Time{})
		return c, nil
	}
}
