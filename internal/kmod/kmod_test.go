package kmod

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A folder with depmod's files: dependencies come from modules.dep, the
// module files themselves are not read (they are not even ELF here).
func TestResolveFromModulesDep(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"modules.dep": "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n" +
			"kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n" +
			"kernel/net/9p/9pnet.ko.xz:\n" +
			"kernel/fs/netfs/netfs.ko.xz: kernel/fs/fscache/fscache.ko.xz\n" +
			"kernel/fs/fscache/fscache.ko.xz:\n",
		"modules.builtin": "kernel/fs/fscache/fscache.ko\n",
	}
	for name, data := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644))
	}
	mods, err := Resolve(dir, "9pnet-virtio", "9p")
	require.NoError(t, err)
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
		assert.True(t, m.Compressed())
	}
	assert.Equal(t, []string{"9pnet", "9pnet_virtio", "netfs", "9p"}, names, "dependencies first, builtins left out")
	assert.Equal(t, filepath.Join(dir, "kernel/fs/9p/9p.ko.xz"), mods[3].Path)

	_, err = Resolve(dir, "overlay")
	assert.ErrorContains(t, err, "no module overlay")
}

// Without modules.dep a compressed module's dependencies cannot be read.
func TestResolveCompressedWithoutModulesDep(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "kernel", "fs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kernel", "fs", "overlay.ko.zst"), nil, 0o644))
	_, err := Resolve(dir, "overlay")
	assert.ErrorContains(t, err, "run depmod")
}
