package unixsock

import (
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestListenRemoveStaleRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	removed, err := RemoveStale(path)
	require.NoError(t, err)
	assert.False(t, removed, "nothing there")

	ln, sock, err := Listen(path)
	require.NoError(t, err)
	st, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSocket|0o600, st.Mode())
	_, err = RemoveStale(path)
	assert.ErrorIs(t, err, ErrInUse, "a live socket is kept")
	_, _, err = Listen(path)
	assert.Error(t, err, "bind refuses an existing path")

	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
	// A second name keeps the old inode from being reused below.
	require.NoError(t, os.Link(path, path+".old"))
	removed, err = RemoveStale(path)
	require.NoError(t, err)
	assert.True(t, removed, "a dead socket is replaced")

	// Remove leaves a socket that replaced ours.
	ln, _, err = Listen(path)
	require.NoError(t, err)
	defer ln.Close()
	require.NoError(t, Remove(path, sock))
	assert.FileExists(t, path)
}
