package vsock

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseConnect(t *testing.T) {
	tests := []struct {
		line string
		port uint32
		ok   bool
	}{
		{"CONNECT 52\n", 52, true},
		{"CONNECT 52\r\n", 52, true},
		{"CONNECT 4294967295\n", 4294967295, true},
		{"CONNECT 4294967296\n", 0, false},
		{"CONNECT -1\n", 0, false},
		{"CONNECT +1\n", 0, false},
		{"CONNECT \n", 0, false},
		{"CONNECT 52", 0, false},
		{"connect 52\n", 0, false},
		{"CONNECT 5 2\n", 0, false},
		{"\n", 0, false},
	}
	for _, tt := range tests {
		port, err := ParseConnect(tt.line)
		if !tt.ok {
			assert.ErrorIs(t, err, ErrConnectLine, "%q", tt.line)
			continue
		}
		require.NoError(t, err, "%q", tt.line)
		assert.Equal(t, tt.port, port)
	}
}

// serveUnix serves the rig's device on a unix socket and returns its path.
func serveUnix(t *testing.T, r *rig) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	u := ServeUnix(r.d, ln, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { u.Close() })
	return path
}

func TestUnixConnect(t *testing.T) {
	r := newRig(t, Options{})
	r.postRx(16)
	c, err := net.Dial("unix", serveUnix(t, r))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(waitFor)))
	// The command in two pieces, the first data right behind it.
	_, err = io.WriteString(c, "CONN")
	require.NoError(t, err)
	r.expectQuiet(t)
	_, err = io.WriteString(c, "ECT 52\nfirst")
	require.NoError(t, err)
	req, _ := r.recv(t)
	require.Equal(t, OpRequest, req.Op)
	assert.Equal(t, uint32(52), req.DstPort)
	r.send(t, hdr(OpResponse, 52, req.SrcPort), nil)
	r.send(t, hdr(OpRW, 52, req.SrcPort), []byte("from the guest"))

	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("OK %d\n", req.SrcPort), line, "the OK line comes before the guest's data")
	got := make([]byte, len("from the guest"))
	_, err = io.ReadFull(br, got)
	require.NoError(t, err)
	assert.Equal(t, "from the guest", string(got))
	h, data := r.recv(t)
	assert.Equal(t, OpRW, h.Op)
	assert.Equal(t, "first", string(data), "data sent with the command reaches the guest")
}

func TestUnixRefusedAndMalformed(t *testing.T) {
	r := newRig(t, Options{})
	r.postRx(16)
	path := serveUnix(t, r)
	client := func(cmd string) net.Conn {
		c, err := net.Dial("unix", path)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.SetDeadline(time.Now().Add(waitFor)))
		_, err = io.WriteString(c, cmd)
		require.NoError(t, err)
		return c
	}
	closed := func(c net.Conn) {
		rest, err := io.ReadAll(c)
		if !errors.Is(err, syscall.ECONNRESET) { // closed with the client's bytes unread
			assert.NoError(t, err, "closed, not timed out")
		}
		assert.Empty(t, rest)
	}

	c := client("CONNECT 52\n")
	req, _ := r.recv(t)
	r.send(t, hdr(OpRST, 52, req.SrcPort), nil)
	closed(c)

	for _, bad := range []string{"HELLO\n", "CONNECT x\n", string(make([]byte, maxConnectLine+1))} {
		closed(client(bad))
	}
	r.expectQuiet(t)
}

func TestUnixDialer(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "v.sock")
	ln, err := net.Listen("unix", base+"_7")
	require.NoError(t, err)
	defer ln.Close()
	r := newRig(t, Options{Dial: UnixDialer(base)})
	r.postRx(16)
	r.connect(t, 40, 7)
	c, err := ln.Accept()
	require.NoError(t, err)
	defer c.Close()
	r.send(t, hdr(OpRW, 40, 7), []byte("hi"))
	got := make([]byte, 2)
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	assert.Equal(t, "hi", string(got))

	// The guest shuts its write side: the host reads EOF and still sends.
	shut := hdr(OpShutdown, 40, 7)
	shut.Flags = ShutdownSend
	r.send(t, shut, nil)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(waitFor)))
	_, err = c.Read(got)
	assert.ErrorIs(t, err, io.EOF)
	_, err = io.WriteString(c, "bye")
	require.NoError(t, err)
	h, data := r.recv(t)
	assert.Equal(t, OpRW, h.Op)
	assert.Equal(t, "bye", string(data))

	// Then the host closes: SHUTDOWN, and with both ways done, RST.
	c.Close()
	sh, _ := r.recv(t)
	assert.Equal(t, OpShutdown, sh.Op)
	rst, _ := r.recv(t)
	assert.Equal(t, OpRST, rst.Op)
	assert.Zero(t, r.d.Stats().Conns)

	r.send(t, hdr(OpRequest, 41, 8), nil)
	h, _ = r.recv(t)
	assert.Equal(t, OpRST, h.Op, "no %s_8", base)
	_, err = os.Stat(base + "_8")
	assert.ErrorIs(t, err, os.ErrNotExist)
}
