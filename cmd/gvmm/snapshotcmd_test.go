package main

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// snapshotFolder writes a folder like a snapshot's: a small state file
// and a sparse memory file.
func snapshotFolder(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "state"), []byte("state"), 0o600))
	mem, err := os.Create(filepath.Join(dir, "memory"))
	require.NoError(t, err)
	_, err = mem.WriteAt([]byte("page"), 1<<20)
	require.NoError(t, err)
	require.NoError(t, mem.Truncate(4<<20))
	require.NoError(t, mem.Close())
}

func checkMoved(t *testing.T, src, dst string) {
	t.Helper()
	assert.NoDirExists(t, src)
	state, err := os.ReadFile(filepath.Join(dst, "state"))
	require.NoError(t, err)
	assert.Equal(t, "state", string(state))
	mem, err := os.ReadFile(filepath.Join(dst, "memory"))
	require.NoError(t, err)
	require.Len(t, mem, 4<<20)
	assert.Equal(t, "page", string(mem[1<<20:1<<20+4]))
	fi, err := os.Stat(filepath.Join(dst, "memory"))
	require.NoError(t, err)
	assert.Less(t, fi.Sys().(*syscall.Stat_t).Blocks*512, int64(1<<20), "holes kept")
}

func TestMoveSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name  string
		empty bool // dst exists, empty
	}{{"to a new folder", false}, {"into an empty folder", true}} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
			snapshotFolder(t, src)
			if tc.empty {
				require.NoError(t, os.Mkdir(dst, 0o700))
			}
			require.NoError(t, moveSnapshot(context.Background(), src, dst))
			checkMoved(t, src, dst)
		})
	}
}

// TestCopySnapshot is the move across file systems.
func TestCopySnapshot(t *testing.T) {
	root := t.TempDir()
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	snapshotFolder(t, src)
	require.NoError(t, copySnapshot(context.Background(), src, dst))
	checkMoved(t, src, dst)

	// What the confined VMM's user put there is not followed.
	evil := filepath.Join(root, "evil")
	snapshotFolder(t, evil)
	secret := filepath.Join(root, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("secret"), 0o600))
	require.NoError(t, os.Symlink(secret, filepath.Join(evil, "link")))
	err := copySnapshot(context.Background(), evil, filepath.Join(root, "dst2"))
	assert.ErrorContains(t, err, "not a regular file")
	assert.NoFileExists(t, filepath.Join(root, "dst2", "link"))
}

func TestCheckEmptyOrAbsent(t *testing.T) {
	root := t.TempDir()
	full := filepath.Join(root, "full")
	require.NoError(t, os.Mkdir(full, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(full, "x"), nil, 0o600))
	empty := filepath.Join(root, "empty")
	require.NoError(t, os.Mkdir(empty, 0o700))
	assert.NoError(t, checkEmptyOrAbsent(filepath.Join(root, "absent")))
	assert.NoError(t, checkEmptyOrAbsent(empty))
	assert.ErrorContains(t, checkEmptyOrAbsent(full), "not empty")
}
