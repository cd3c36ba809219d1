package hostfs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func attach(t *testing.T, dir string, readOnly bool) *File {
	t.Helper()
	return attachWith(t, dir, Options{ReadOnly: readOnly})
}

func attachWith(t *testing.T, dir string, opts Options) *File {
	t.Helper()
	s, err := Open(dir, opts)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	f, err := s.Attach()
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f.(*File)
}

// Readdir resumes from each entry's offset: a folder read a few entries
// at a time yields every name once.
func TestReaddirResumes(t *testing.T) {
	dir := t.TempDir()
	want := map[string]bool{".": true, "..": true}
	for i := range 300 {
		name := fmt.Sprintf("file-with-a-longish-name-%03d", i)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), nil, 0o644))
		want[name] = true
	}
	root := attach(t, dir, false)
	_, d, err := root.Walk(nil)
	require.NoError(t, err)
	defer d.Close()
	_, _, err = d.Open(p9.ReadOnly)
	require.NoError(t, err)
	seen := map[string]int{}
	var off uint64
	for {
		ents, err := d.Readdir(off, 600)
		require.NoError(t, err)
		if len(ents) == 0 {
			break
		}
		for _, e := range ents {
			seen[e.Name]++
			off = e.Offset
		}
	}
	assert.Len(t, seen, len(want))
	for name, n := range seen {
		assert.True(t, want[name], name)
		assert.Equal(t, 1, n, "%s listed %d times", name, n)
	}
}

// Errors reach the server as errnos of its own type, unchanged: EPERM
// stays EPERM, ENOTEMPTY stays ENOTEMPTY.
func TestErrnosKeptExact(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "full", "x"), 0o755))
	root := attach(t, dir, false)
	err := root.UnlinkAt("full", 0x200) // AT_REMOVEDIR
	assert.Equal(t, linux.ENOTEMPTY, err)
	_, err = root.Mknod("n", p9.ModeNamedPipe|0o644, 0, 0, p9.NoUID, p9.NoGID)
	assert.Equal(t, linux.EPERM, err)
	_, _, err = root.Walk([]string{"missing"})
	assert.Equal(t, linux.ENOENT, err)
}

// A guest's chmod cannot make a set-user-ID or set-group-ID file on the
// host; the other bits, and a folder's set-group-ID, are kept. A share
// with Options.SetID keeps them all.
func TestSetAttrPermissions(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), nil, 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	shares := map[bool]*File{false: attach(t, dir, false), true: attachWith(t, dir, Options{SetID: true})}
	for _, tc := range []struct {
		setID     bool
		name      string
		asked     p9.FileMode
		wantPerms os.FileMode
		wantExtra os.FileMode
	}{
		{false, "f", 0o4755, 0o755, 0},
		{false, "f", 0o2755, 0o755, 0},
		{false, "f", 0o1644, 0o644, os.ModeSticky},
		{false, "f", 0o600, 0o600, 0},
		{false, "d", 0o2775, 0o775, os.ModeSetgid},
		{false, "d", 0o5777, 0o777, os.ModeSticky},
		{true, "f", 0o4755, 0o755, os.ModeSetuid},
		{true, "f", 0o2755, 0o755, os.ModeSetgid},
	} {
		_, f, err := shares[tc.setID].Walk([]string{tc.name})
		require.NoError(t, err)
		require.NoError(t, f.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: tc.asked}))
		require.NoError(t, f.Close())
		fi, err := os.Stat(filepath.Join(dir, tc.name))
		require.NoError(t, err)
		assert.Equal(t, tc.wantPerms, fi.Mode().Perm(), "%s chmod %o, setid %v", tc.name, tc.asked, tc.setID)
		assert.Equal(t, tc.wantExtra, fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky), "%s chmod %o, setid %v", tc.name, tc.asked, tc.setID)
	}
}

// Opening a file for writing, or truncating it, drops its set-user-ID
// bit, and set-group-ID with group execute, as Linux does for a writer
// without CAP_FSETID; reading keeps them, and so does a share with
// Options.SetID.
func TestWriteDropsSetID(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setID bool
		mode  os.FileMode // as os.Chmod takes it
		write func(p9.File) error
		want  os.FileMode
	}{
		{"read keeps set-user-ID", false, 0o755 | os.ModeSetuid, openAs(p9.ReadOnly), 0o755 | os.ModeSetuid},
		{"write drops set-user-ID", false, 0o755 | os.ModeSetuid, openAs(p9.WriteOnly), 0o755},
		{"read-write drops set-user-ID", false, 0o755 | os.ModeSetuid, openAs(p9.ReadWrite), 0o755},
		{"write drops set-group-ID with group execute", false, 0o755 | os.ModeSetgid, openAs(p9.WriteOnly), 0o755},
		{"write keeps set-group-ID without group execute", false, 0o645 | os.ModeSetgid, openAs(p9.WriteOnly), 0o645 | os.ModeSetgid},
		{"write keeps the sticky bit", false, 0o644 | os.ModeSticky, openAs(p9.WriteOnly), 0o644 | os.ModeSticky},
		{"truncate drops set-user-ID", false, 0o755 | os.ModeSetuid, truncate, 0o755},
		{"a set-ID share keeps set-user-ID on write", true, 0o755 | os.ModeSetuid, openAs(p9.ReadWrite), 0o755 | os.ModeSetuid},
		{"a set-ID share keeps set-user-ID on truncate", true, 0o755 | os.ModeSetuid, truncate, 0o755 | os.ModeSetuid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "prog")
			require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"), 0o600))
			require.NoError(t, os.Chmod(path, tc.mode))
			root := attachWith(t, dir, Options{SetID: tc.setID})
			_, f, err := root.Walk([]string{"prog"})
			require.NoError(t, err)
			defer f.Close()
			require.NoError(t, tc.write(f))
			fi, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, tc.want, fi.Mode())
		})
	}
}

func truncate(f p9.File) error {
	return f.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 1})
}

func openAs(mode p9.OpenFlags) func(p9.File) error {
	return func(f p9.File) error {
		_, _, err := f.Open(mode)
		return err
	}
}
