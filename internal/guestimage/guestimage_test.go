package guestimage

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/gvmm-dev/gvmm/internal/kmod"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	init, ko, kozst := filepath.Join(dir, "init"), filepath.Join(dir, "9p.ko"), filepath.Join(dir, "overlay.ko.zst")
	for _, f := range []string{init, ko, kozst} {
		require.NoError(t, os.WriteFile(f, []byte("contents of "+filepath.Base(f)), 0o644))
	}
	out := filepath.Join(dir, "initrd.cpio")
	require.NoError(t, Write(out, init, []kmod.Module{{Name: "9p", Path: ko}, {Name: "overlay", Path: kozst}}))
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(f))
	require.NoError(t, err)
	files := map[string]cpio.Record{}
	for _, r := range recs {
		files[r.Name] = r
	}
	require.Contains(t, files, "init")
	assert.Equal(t, uint64(0o755), files["init"].Mode&0o777)
	assert.Contains(t, files, "dev/console")
	assert.Contains(t, files, "lib/modules/9p.ko")
	assert.Contains(t, files, "lib/modules/overlay.ko.zst")
	order := files[modulesOrder]
	data := make([]byte, order.FileSize)
	_, err = order.ReadAt(data, 0)
	require.NoError(t, err)
	assert.Equal(t, "/lib/modules/9p.ko\n/lib/modules/overlay.ko.zst compressed\n", string(data))
}

func TestCheckStatic(t *testing.T) {
	assert.ErrorIs(t, CheckStatic("/bin/sh"), ErrNotStatic, "Debian's shell is dynamically linked")
	assert.Error(t, CheckStatic(filepath.Join(t.TempDir(), "missing")))
}
