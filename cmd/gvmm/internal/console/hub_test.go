package console

import (
	"bufio"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func listenHub(t *testing.T) (*Hub, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "console.sock")
	h, err := Listen(path, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h, path
}

// attach connects a client and waits until the hub has it.
func attach(t *testing.T, h *Hub, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.client != nil
	}, 5*time.Second, time.Millisecond)
	return c
}

func TestHubForwardsBothWays(t *testing.T) {
	h, path := listenHub(t)
	st, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSocket|0o600, st.Mode())

	n, err := h.Write([]byte("before anyone listens\n"))
	require.NoError(t, err, "output without a client is dropped, not an error")
	assert.Equal(t, 22, n)

	c := attach(t, h, path)
	_, err = h.Write([]byte("login: "))
	require.NoError(t, err)
	got := make([]byte, 7)
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	assert.Equal(t, "login: ", string(got))

	_, err = c.Write([]byte("root\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(h.Input()).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "root\n", line)

	// A second client is turned away; the first keeps the console.
	second, err := net.Dial("unix", path)
	require.NoError(t, err)
	msg, err := io.ReadAll(second)
	require.NoError(t, err)
	assert.Equal(t, BusyMessage, string(msg))
	second.Close()

	// Once the first leaves, another may attach.
	c.Close()
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.client == nil
	}, 5*time.Second, time.Millisecond)
	third := attach(t, h, path)
	_, err = h.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(third, got[:1])
	require.NoError(t, err)
}

func TestHubDetachesAStuckClient(t *testing.T) {
	h, path := listenHub(t)
	attach(t, h, path) // never reads
	start := time.Now()
	big := make([]byte, 1<<20)
	for i := 0; i < 16 && time.Since(start) < 10*time.Second; i++ {
		_, err := h.Write(big)
		require.NoError(t, err)
	}
	h.mu.Lock()
	client := h.client
	h.mu.Unlock()
	assert.Nil(t, client, "the stuck client is detached")
	assert.Less(t, time.Since(start), 10*time.Second)
}

func TestHubClose(t *testing.T) {
	h, path := listenHub(t)
	c := attach(t, h, path)
	require.NoError(t, h.Close())
	_, err := io.ReadAll(h.Input())
	require.NoError(t, err, "input ends with EOF")
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the client is disconnected")
	assert.NoFileExists(t, path)
	require.NoError(t, h.Close())
}
