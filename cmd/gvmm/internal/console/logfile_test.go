package console

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLogFileKeepsTheNewestOutputWithinTwiceItsLimit(t *testing.T) {
	const limit = 100
	tests := []struct {
		name   string
		writes []int // sizes of the writes, of consecutive bytes
	}{
		{"under the limit", []int{10, 20, 30}},
		{"exactly the limit", []int{100}},
		{"one byte over", []int{100, 1}},
		{"one write of many limits", []int{1050}},
		{"many small writes", slices.Repeat([]int{3}, 400)},
		{"mixed", []int{99, 2, 250, 1, 1, 130}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "console.log")
			l, err := OpenLog(path, limit, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			var all []byte
			for i, n := range tt.writes {
				p := []byte(strings.Repeat(fmt.Sprintf("%c", 'a'+i%26), n))
				all = append(all, p...)
				got, err := l.Write(p)
				require.NoError(t, err)
				require.Equal(t, n, got)
			}
			require.NoError(t, l.Close())

			cur, err := os.ReadFile(path)
			require.NoError(t, err)
			old, err := os.ReadFile(path + ".1")
			if len(all) <= limit {
				assert.ErrorIs(t, err, os.ErrNotExist, "no rotation yet")
			} else {
				require.NoError(t, err)
				assert.Len(t, old, limit, "a rotated file is full")
			}
			assert.LessOrEqual(t, len(cur), limit)
			assert.NotEmpty(t, cur)
			kept := append(old, cur...)
			assert.Equal(t, all[len(all)-len(kept):], kept, "the newest output, in order")
		})
	}
}

func TestLogFileWritesNeverFail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "console.log")
	var logged bytes.Buffer
	l, err := OpenLog(path, 10, slog.New(slog.NewTextHandler(&logged, nil)))
	require.NoError(t, err)
	defer l.Close()
	// With its folder gone, the open file still takes writes, but a
	// rotation cannot rename it.
	require.NoError(t, os.RemoveAll(dir))
	for range 5 {
		n, err := l.Write([]byte("0123456789abc"))
		assert.NoError(t, err)
		assert.Equal(t, 13, n)
	}
	assert.Equal(t, 1, strings.Count(logged.String(), "level=WARN"), "one line, not one per write:\n%s", logged.String())
	assert.Contains(t, logged.String(), "rotating the console log")
}

// disk is a file system that can fill up: files on it fail their writes
// with ENOSPC while it is full.
type disk struct {
	full  bool
	files map[string]*bytes.Buffer
}

type diskFile struct {
	d *disk
	b *bytes.Buffer
}

func (f diskFile) Write(p []byte) (int, error) {
	if f.d.full {
		return 0, syscall.ENOSPC
	}
	return f.b.Write(p)
}

func (diskFile) Close() error { return nil }

// A full disk used to make the log rotate on every write, throwing its
// history (PATH.1) away, and warn once per write. Now it drops output,
// warns once, and records again once the disk has room.
func TestLogFileOnAFullDisk(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "console.log")
	var logged bytes.Buffer
	l, err := OpenLog(path, 100, slog.New(slog.NewTextHandler(&logged, nil)))
	require.NoError(t, err)
	d := &disk{files: map[string]*bytes.Buffer{}}
	l.create = func(p string) (io.WriteCloser, error) {
		d.files[p] = &bytes.Buffer{}
		return diskFile{d, d.files[p]}, nil
	}
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	require.NoError(t, os.WriteFile(path+".1", []byte("history"), 0o600))

	write := func(s string) {
		n, err := l.Write([]byte(s))
		require.NoError(t, err)
		require.Equal(t, len(s), n)
	}
	write("before ")                   // into the file OpenLog created
	l.f = diskFile{d, &bytes.Buffer{}} // now on the disk that fills up
	d.full = true
	for range 1000 {
		write("lost ")
		now = now.Add(2 * time.Millisecond) // retries, failing, every logRetry
	}
	old, err := os.ReadFile(path + ".1")
	require.NoError(t, err)
	assert.Equal(t, "history", string(old), "the history survives a full disk")
	assert.Empty(t, d.files, "no rotation while the disk is full")
	assert.Equal(t, 1, strings.Count(logged.String(), "level=WARN"), "%s", logged.String())
	assert.Contains(t, logged.String(), "no space left on device")

	d.full = false
	now = l.failedAt.Add(logRetry / 2)
	write("dropped within a second of the last failure ")
	now = l.failedAt.Add(logRetry)
	write("after")
	assert.Equal(t, "after", l.f.(diskFile).b.String())
	assert.Contains(t, logged.String(), "recording the console log again")
	assert.Contains(t, logged.String(), fmt.Sprintf("dropped_bytes=%d", 5*1000+len("dropped within a second of the last failure ")))
}

func TestOpenLogRefusesANonPositiveLimit(t *testing.T) {
	_, err := OpenLog(filepath.Join(t.TempDir(), "console.log"), 0, slog.New(slog.DiscardHandler))
	assert.ErrorContains(t, err, "not positive")
}

func TestAppendLogAddsAndRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmm.log")
	require.NoError(t, os.WriteFile(path, []byte("earlier run\n"), 0o600))
	var opened []string
	l, err := AppendLog(path, 21, slog.New(slog.DiscardHandler), func(f *os.File) error {
		opened = append(opened, f.Name())
		return nil
	})
	require.NoError(t, err)
	_, err = l.Write([]byte("this run\n"))
	require.NoError(t, err)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "earlier run\nthis run\n", string(got), "added to, not emptied")
	assert.NoFileExists(t, path+".1")

	// Full, the file moves to .1 and a new one starts, opened
	// through the hook again.
	_, err = l.Write([]byte("and more\n"))
	require.NoError(t, err)
	require.NoError(t, l.Close())
	old, err := os.ReadFile(path + ".1")
	require.NoError(t, err)
	assert.Equal(t, "earlier run\nthis run\n", string(old))
	got, err = os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "and more\n", string(got))
	assert.Equal(t, []string{path, path}, opened)

	// A file already past its limit is rotated at the first write.
	require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte("x"), 30), 0o600))
	l, err = AppendLog(path, 20, slog.New(slog.DiscardHandler), nil)
	require.NoError(t, err)
	_, err = l.Write([]byte("new\n"))
	require.NoError(t, err)
	require.NoError(t, l.Close())
	got, err = os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "new\n", string(got))
	old, err = os.ReadFile(path + ".1")
	require.NoError(t, err)
	assert.Len(t, old, 30)

	_, err = AppendLog(path, 0, slog.New(slog.DiscardHandler), nil)
	assert.ErrorContains(t, err, "limit 0 is not positive")
}
