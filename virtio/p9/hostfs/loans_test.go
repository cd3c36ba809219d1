package hostfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// readThrough reads the file the share lends for qid, or reports that it
// lends none.
func readThrough(t *testing.T, s *Share, qid uint64) (string, bool) {
	t.Helper()
	fd, release, ok := s.Reader(qid)
	if !ok {
		return "", false
	}
	defer release()
	b := make([]byte, 64)
	n, err := unix.Pread(fd, b, 0)
	require.NoError(t, err)
	return string(b[:n]), true
}

// withFile serves a new folder holding one file, f.
func withFile(t *testing.T) (dir string, root *File) {
	t.Helper()
	dir = t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("content"), 0o644))
	return dir, attach(t, dir, false)
}

// openF opens f through a new fid of root and returns its QID path.
func openF(t *testing.T, root *File, flags p9.OpenFlags) (p9.File, uint64) {
	t.Helper()
	_, f, err := root.Walk([]string{"f"})
	require.NoError(t, err)
	qid, _, err := f.Open(flags)
	require.NoError(t, err)
	return f, qid.Path
}

// TestReaderLending: a regular file is lent for reads while a File holds
// it open for reading without O_DIRECT, and only then.
func TestReaderLending(t *testing.T) {
	tests := []struct {
		name  string
		flags p9.OpenFlags
		lent  bool
	}{
		{"read-only", p9.ReadOnly, true},
		{"read-write", p9.ReadWrite, true},
		{"write-only", p9.WriteOnly, false},
		{"O_DIRECT", p9.ReadOnly | p9.OpenFlags(unix.O_DIRECT), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, root := withFile(t)
			_, f, err := root.Walk([]string{"f"})
			require.NoError(t, err)
			qid, _, err := f.Open(tt.flags)
			if tt.flags&unix.O_DIRECT != 0 && err != nil {
				t.Skipf("the temporary folder's file system refuses O_DIRECT: %v", err)
			}
			require.NoError(t, err)
			got, lent := readThrough(t, root.share, qid.Path)
			assert.Equal(t, tt.lent, lent)
			if lent {
				assert.Equal(t, "content", got)
			}
			require.NoError(t, f.Close())
			_, lent = readThrough(t, root.share, qid.Path)
			assert.False(t, lent, "lent after its File closed")
		})
	}
}

// TestReaderOutlivesItsFiles: the descriptor stays lent while any File
// holds the file open, and a borrowed one stays usable until released
// even when the last File closes meanwhile.
func TestReaderOutlivesItsFiles(t *testing.T) {
	_, root := withFile(t)
	a, qid := openF(t, root, p9.ReadOnly)
	b, _ := openF(t, root, p9.ReadOnly)
	require.NoError(t, a.Close())
	got, lent := readThrough(t, root.share, qid)
	assert.True(t, lent, "b still holds the file open")
	assert.Equal(t, "content", got)

	fd, release, ok := root.share.Reader(qid)
	require.True(t, ok)
	require.NoError(t, b.Close())
	buf := make([]byte, 7)
	n, err := unix.Pread(fd, buf, 0)
	require.NoError(t, err, "a borrowed descriptor closed under its reader")
	assert.Equal(t, "content", string(buf[:n]))
	release()
	_, err = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	assert.ErrorIs(t, err, unix.EBADF, "the descriptor outlived its last reader")

	// A folder is never lent.
	_, d, err := root.Walk(nil)
	require.NoError(t, err)
	dq, _, err := d.Open(p9.ReadOnly)
	require.NoError(t, err)
	_, lent = readThrough(t, root.share, dq.Path)
	assert.False(t, lent, "a folder")
	require.NoError(t, d.Close())

	// A created file is lent as it was opened.
	c, cq, _, err := root.Create("new", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	require.NoError(t, err)
	_, lent = readThrough(t, root.share, cq.Path)
	assert.True(t, lent)
	require.NoError(t, c.Close())
}

// TestDropLoans: a session's end takes back every loan, even of Files
// never closed, but not a descriptor still borrowed.
func TestDropLoans(t *testing.T) {
	_, root := withFile(t)
	f, qid := openF(t, root, p9.ReadOnly)
	fd, release, ok := root.share.Reader(qid)
	require.True(t, ok)

	root.share.DropLoans()
	_, lent := readThrough(t, root.share, qid)
	assert.False(t, lent, "lent after the session's end")
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	assert.NoError(t, err, "a borrowed descriptor closed under its reader")
	release()
	_, err = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	assert.ErrorIs(t, err, unix.EBADF)
	require.NoError(t, f.Close(), "a File closed after the end gives back nothing")
}

// TestWriterLending: a file is lent for writes while a File holds it
// open for writing, per set of O_APPEND, O_DSYNC and O_SYNC, and never
// on a read-only share.
func TestWriterLending(t *testing.T) {
	dir, root := withFile(t)
	lent := func(qid uint64, flags int) bool {
		_, release, ok := root.share.Writer(qid, flags)
		if ok {
			release()
		}
		return ok
	}
	rw, qid := openF(t, root, p9.ReadWrite)
	app, _ := openF(t, root, p9.WriteOnly|p9.OpenFlags(unix.O_APPEND))
	assert.True(t, lent(qid, unix.O_RDWR), "read-write")
	assert.True(t, lent(qid, unix.O_WRONLY|unix.O_APPEND), "append")
	assert.False(t, lent(qid, unix.O_WRONLY|unix.O_DSYNC), "no File opened it O_DSYNC")
	_, read := readThrough(t, root.share, qid)
	assert.True(t, read, "the read-write File lends for reads too")
	require.NoError(t, app.Close())
	assert.False(t, lent(qid, unix.O_WRONLY|unix.O_APPEND), "its only lender closed")
	assert.True(t, lent(qid, unix.O_RDWR))
	require.NoError(t, rw.Close())
	assert.False(t, lent(qid, unix.O_RDWR))

	ro := attach(t, dir, true)
	f, rq := openF(t, ro, p9.ReadOnly)
	_, release, ok := ro.share.Writer(rq, 0)
	assert.False(t, ok, "a read-only share")
	if ok {
		release()
	}
	require.NoError(t, f.Close())
}
