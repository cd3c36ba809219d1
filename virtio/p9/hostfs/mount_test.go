package hostfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A share crosses into a file system mounted beneath its root, as the
// containerd shim's pod share has each container's root mounted in it,
// and stays confined beneath its root there too: a symbolic link or ".."
// out of the mount does not lead out of the share.
func TestCrossesMountsBeneathTheRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mounting a folder beneath the share needs root")
	}
	share, outside := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "file"), []byte("beneath"), 0o644))
	require.NoError(t, os.Symlink(outside, filepath.Join(outside, "out")))
	mnt := filepath.Join(share, "c1")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	require.NoError(t, unix.Mount(outside, mnt, "", unix.MS_BIND, ""))
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })

	root := attach(t, share, false)
	_, f, err := root.Walk([]string{"c1", "file"})
	require.NoError(t, err, "a file in the mount beneath the root")
	defer f.Close()
	_, _, err = f.Open(p9.ReadOnly)
	require.NoError(t, err)
	buf := make([]byte, 16)
	n, err := f.ReadAt(buf, 0)
	require.NoError(t, err)
	assert.Equal(t, "beneath", string(buf[:n]))

	_, _, err = root.Walk([]string{"c1", "out", "file"})
	assert.Equal(t, linux.ENOTDIR, err, "a symbolic link in the mount is not followed: a link is no folder to walk on")
	_, _, err = root.Walk([]string{"c1", "..", ".."})
	assert.Error(t, err, "no way up out of the share")
}
