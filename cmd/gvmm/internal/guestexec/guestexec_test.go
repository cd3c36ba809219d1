package guestexec

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEnvDropsTheHostSession(t *testing.T) {
	got := Env([]string{"PATH=/usr/bin:/bin", "HOME=/root", "SSH_AUTH_SOCK=/tmp/agent", "DISPLAY=:0",
		"PWD=/elsewhere", "LANG=C.UTF-8", "XDG_RUNTIME_DIR=/run/user/0"}, "/work")
	assert.Equal(t, []string{"PATH=/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8", "PWD=/work"}, got)
}

func TestRequestAndStatus(t *testing.T) {
	dir := t.TempDir()
	req := Request{Args: []string{"sh", "-c", "exit 7"}, Env: []string{"A=b"}, Dir: "/w", Mounts: []Mount{{Tag: "t", Path: "/p"}}}
	require.NoError(t, WriteRequest(dir, req))
	_, err := Status(dir)
	assert.ErrorIs(t, err, os.ErrNotExist, "no status before the guest wrote one")
	for data, want := range map[string]int{"7\n": 7, "0\n": 0, "255\n": 255} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, StatusFile), []byte(data), 0o644))
		st, err := Status(dir)
		require.NoError(t, err)
		assert.Equal(t, want, st)
	}
	for _, bad := range []string{"", "256\n", "-1\n", "x\n"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, StatusFile), []byte(bad), 0o644))
		_, err := Status(dir)
		assert.Error(t, err, "%q", bad)
	}
}

func TestCheckStatic(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	err = CheckStatic(self) // go test binaries are static unless cgo is in
	if err != nil {
		assert.ErrorIs(t, err, ErrNotStatic)
	}
	assert.ErrorIs(t, CheckStatic("/bin/sh"), ErrNotStatic, "Debian's shell is dynamically linked")
	assert.Error(t, CheckStatic(filepath.Join(t.TempDir(), "missing")))
}

// The host notes where its stdin ended; the guest's pipe delivers that
// many bytes from the console, then its end, even while the console
// stays open.
func TestStdinEndsWhereTheHostsDid(t *testing.T) {
	ctlDir := t.TempDir()
	ctl, err := os.Open(ctlDir)
	require.NoError(t, err)
	defer ctl.Close()
	consoleR, consoleW, err := os.Pipe() // the console: never closed here
	require.NoError(t, err)
	defer consoleW.Close()
	stdin, err := pipeStdin(consoleR, ctl)
	require.NoError(t, err)
	defer stdin.Close()

	host := &Input{R: strings.NewReader("line 1\nline 2\n"), Dir: ctlDir}
	require.NoError(t, markReady(ctl))
	buf := make([]byte, 5)
	for {
		n, err := host.Read(buf)
		_, werr := consoleW.Write(buf[:n]) // what the UART carries
		require.NoError(t, werr)
		if err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
	}
	data, err := os.ReadFile(filepath.Join(ctlDir, StdinEOFFile))
	require.NoError(t, err)
	assert.Equal(t, "14\n", string(data))
	got, err := io.ReadAll(stdin)
	require.NoError(t, err, "the pipe ends")
	assert.Equal(t, "line 1\nline 2\n", string(got))
}

// Nothing is read from the host before the guest's console is raw.
func TestInputWaitsForTheGuest(t *testing.T) {
	ctlDir := t.TempDir()
	in := &Input{R: strings.NewReader("x"), Dir: ctlDir}
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 1)
		n, _ := in.Read(b)
		got <- string(b[:n])
	}()
	select {
	case <-got:
		t.Fatal("input read before the guest was ready")
	case <-time.After(5 * stdinPoll):
	}
	require.NoError(t, os.WriteFile(filepath.Join(ctlDir, ReadyFile), nil, 0o644))
	select {
	case s := <-got:
		assert.Equal(t, "x", s)
	case <-time.After(5 * time.Second):
		t.Fatal("input held after the guest was ready")
	}
}

func TestStdinEmpty(t *testing.T) {
	ctlDir := t.TempDir()
	ctl, err := os.Open(ctlDir)
	require.NoError(t, err)
	defer ctl.Close()
	consoleR, consoleW, err := os.Pipe()
	require.NoError(t, err)
	defer consoleW.Close()
	host := &Input{R: strings.NewReader(""), Dir: ctlDir}
	require.NoError(t, markReady(ctl))
	_, err = host.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	stdin, err := pipeStdin(consoleR, ctl)
	require.NoError(t, err)
	defer stdin.Close()
	got, err := io.ReadAll(stdin)
	require.NoError(t, err)
	assert.Empty(t, got)
}
