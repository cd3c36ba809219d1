package console

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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

func TestOpenLogRefusesANonPositiveLimit(t *testing.T) {
	_, err := OpenLog(filepath.Join(t.TempDir(), "console.log"), 0, slog.New(slog.DiscardHandler))
	assert.ErrorContains(t, err, "not positive")
}
