package initramfs

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/u-root/u-root/pkg/cpio"
)

func TestArchiveRoundTrip(t *testing.T) {
	a := New()
	require.NoError(t, a.AddData("etc/hello", []byte("hi\n"), 0o644))
	require.NoError(t, a.AddCharDev("dev/console", 0o600, 5, 1))
	require.NoError(t, a.AddSymlink("bin/sh", "/bin/busybox"))
	require.NoError(t, a.AddDir("proc", 0o555))
	assert.Error(t, a.AddData("/etc/hello", nil, 0o644), "a duplicate path is refused")

	var buf bytes.Buffer
	n, err := a.WriteTo(&buf)
	require.NoError(t, err)
	assert.Equal(t, int64(buf.Len()), n)

	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(buf.Bytes())))
	require.NoError(t, err)
	byName := map[string]cpio.Record{}
	var order []string
	for _, r := range recs {
		byName[r.Name] = r
		order = append(order, r.Name)
	}
	assert.Less(t, indexOf(order, "etc"), indexOf(order, "etc/hello"), "parents come first")
	content, err := io.ReadAll(io.NewSectionReader(byName["etc/hello"], 0, int64(byName["etc/hello"].FileSize)))
	require.NoError(t, err)
	assert.Equal(t, "hi\n", string(content))
	assert.Equal(t, uint64(cpio.S_IFCHR), byName["dev/console"].Mode&cpio.S_IFMT)
	assert.Equal(t, uint64(5), byName["dev/console"].Rmajor)
	assert.Equal(t, uint64(cpio.S_IFLNK), byName["bin/sh"].Mode&cpio.S_IFMT)
	assert.Contains(t, buf.String(), cpio.Trailer, "the archive is terminated")
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func TestParseLDD(t *testing.T) {
	out := []byte("\tlinux-vdso.so.1 (0x00007ffd)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n")
	assert.Equal(t, []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}, parseLDD(out))
}

func TestAddProgramCarriesSharedLibraries(t *testing.T) {
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	a := New()
	require.NoError(t, a.AddProgram("bin/sh", sh))
	libs, err := sharedLibraries(sh)
	require.NoError(t, err)
	require.NotEmpty(t, libs, "the system shell is dynamically linked")
	for _, l := range libs {
		assert.True(t, a.Has(l), l)
	}
}

func TestWriteFile(t *testing.T) {
	a := New()
	require.NoError(t, a.AddData("init", []byte("#!/bin/sh\n"), 0o755))
	p := filepath.Join(t.TempDir(), "x.cpio")
	require.NoError(t, a.WriteFile(p))
	st, err := os.Stat(p)
	require.NoError(t, err)
	assert.Zero(t, st.Size()%4, "newc records are 4-byte aligned")
}

func TestAddProgramTakesDataFiles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "data.cpio")
	require.NoError(t, os.WriteFile(p, []byte("070701..."), 0o644))
	a := New()
	require.NoError(t, a.AddProgram("assets/data.cpio", p))
	assert.True(t, a.Has("assets/data.cpio"))
}
