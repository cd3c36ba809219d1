package kernelcache

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/boot/internal/bootimage"
)

// bzImage wraps payload, gzip-compressed, in the smallest bzImage a
// setup header describes: one setup sector, the payload at
// payload_offset into the protected-mode code, a CRC after it.
func bzImage(t *testing.T, payload []byte) []byte {
	t.Helper()
	const setupSects, payloadOffset = 1, 0x100
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	_, err := w.Write(payload)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	img := make([]byte, (setupSects+1)*512+payloadOffset)
	le := binary.LittleEndian
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	le.PutUint16(img[0x206:], 0x020f)
	le.PutUint32(img[0x248:], payloadOffset)
	le.PutUint32(img[0x24c:], uint32(z.Len()))
	img = append(img, z.Bytes()...)
	return append(img, 0xde, 0xad, 0xbe, 0xef) // the CRC, unchecked
}

func write(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kernel")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path
}

func TestKernel(t *testing.T) {
	pvh := bootimage.ELF(bootimage.Segs())
	noPVH := bootimage.ELF(bootimage.Segs()[:1])
	tests := []struct {
		name    string
		image   []byte
		want    []byte // the cached ELF; nil: boot the image as it is
		cached  string // the file the cache then holds, by suffix
		wantErr string
	}{
		{name: "bzImage with a PVH kernel", image: bzImage(t, pvh), want: pvh, cached: ".vmlinux"},
		{name: "bzImage without a PVH entry", image: bzImage(t, noPVH), cached: ".nopvh"},
		{name: "ELF kernel", image: pvh},
		{name: "not a kernel", image: []byte("hello")},
		{name: "damaged payload", image: func() []byte {
			b := bzImage(t, pvh)
			copy(b[len(b)-16:], "garbage garbage!")
			return b
		}(), wantErr: "decompress"},
		{name: "payload not ELF", image: bzImage(t, []byte("not an ELF file at all")), wantErr: "ELF"},
		{name: "ELF for another machine", image: bzImage(t, bootimage.ELF(bootimage.Segs(), func(h *elf.Header64) { h.Machine = uint16(elf.EM_AARCH64) })), cached: ".nopvh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(filepath.Join(t.TempDir(), "cache"))
			path := write(t, tt.image)
			got, err := c.Kernel(path)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.NoDirExists(t, c.Dir(), "nothing cached for a kernel that failed")
				return
			}
			require.NoError(t, err)
			entries, _ := os.ReadDir(c.Dir())
			if tt.cached == "" {
				assert.Empty(t, got)
				assert.Empty(t, entries, "nothing cached for an image that boots as it is")
				return
			}
			require.Len(t, entries, 1, "one file, no temporary left behind")
			assert.Equal(t, tt.cached, filepath.Ext(entries[0].Name()))
			if tt.want == nil {
				assert.Empty(t, got)
			} else {
				data, err := os.ReadFile(got)
				require.NoError(t, err)
				assert.Equal(t, tt.want, data)
			}
			again, err := c.Kernel(path)
			require.NoError(t, err)
			assert.Equal(t, got, again, "the second boot finds the first one's result")
		})
	}
}

// A bzImage that changed in place is decompressed again, never confused
// with what the cache holds for its former content.
func TestKernelChangedImage(t *testing.T) {
	c := New(t.TempDir())
	path := write(t, bzImage(t, bootimage.ELF(bootimage.Segs())))
	first, err := c.Kernel(path)
	require.NoError(t, err)
	segs := bootimage.Segs()
	segs[0].Data[0] ^= 0xff
	changed := bootimage.ELF(segs)
	require.NoError(t, os.WriteFile(path, bzImage(t, changed), 0o644))
	second, err := c.Kernel(path)
	require.NoError(t, err)
	assert.NotEqual(t, first, second)
	data, err := os.ReadFile(second)
	require.NoError(t, err)
	assert.Equal(t, changed, data)
}

func TestKernelUnwritableCache(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(blocker, nil, 0o644))
	_, err := New(filepath.Join(blocker, "cache")).Kernel(write(t, bzImage(t, bootimage.ELF(bootimage.Segs()))))
	require.ErrorContains(t, err, "kernelcache")
}

func TestKernelMissingFile(t *testing.T) {
	_, err := New(t.TempDir()).Kernel(filepath.Join(t.TempDir(), "absent"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestDefault(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "/somewhere")
	c, err := Default()
	require.NoError(t, err)
	assert.Equal(t, "/somewhere/gvmm/kernels", c.Dir())
}
