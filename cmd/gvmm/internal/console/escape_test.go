package console

import (
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chunks is a reader that returns one chunk per Read, to control how the
// input is split.
type chunks struct {
	parts [][]byte
	err   error // returned after the last part
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.parts) == 0 {
		return 0, c.err
	}
	n := copy(p, c.parts[0])
	c.parts[0] = c.parts[0][n:]
	if len(c.parts[0]) == 0 {
		c.parts = c.parts[1:]
	}
	return n, nil
}

func TestEscapeReader(t *testing.T) {
	errBroken := errors.New("broken")
	tests := []struct {
		name    string
		parts   []string
		err     error // of the underlying reader at the end
		want    string
		wantErr error
		quits   int
	}{
		{"plain", []string{"hello"}, io.EOF, "hello", io.EOF, 0},
		{"quit", []string{"ab\x01xcd"}, io.EOF, "ab", io.EOF, 1},
		{"quit split", []string{"ab\x01", "xcd"}, io.EOF, "ab", io.EOF, 1},
		{"quit alone", []string{"\x01", "x"}, nil, "", io.EOF, 1},
		{"literal Ctrl-A", []string{"a\x01\x01b"}, io.EOF, "a\x01b", io.EOF, 0},
		{"literal Ctrl-A split", []string{"a\x01", "\x01b"}, io.EOF, "a\x01b", io.EOF, 0},
		{"Ctrl-A Ctrl-A x is a literal then x", []string{"\x01\x01x"}, io.EOF, "\x01x", io.EOF, 0},
		{"other byte passes", []string{"\x01c"}, io.EOF, "\x01c", io.EOF, 0},
		{"other byte passes split", []string{"\x01", "c"}, io.EOF, "\x01c", io.EOF, 0},
		{"capital X is not quit", []string{"\x01X"}, io.EOF, "\x01X", io.EOF, 0},
		{"trailing Ctrl-A passes at EOF", []string{"a\x01"}, io.EOF, "a\x01", io.EOF, 0},
		{"reader error after data", []string{"ab"}, errBroken, "ab", errBroken, 0},
		{"quit wins over later error", []string{"\x01x"}, errBroken, "", io.EOF, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &chunks{err: tt.err}
			for _, p := range tt.parts {
				src.parts = append(src.parts, []byte(p))
			}
			quits := 0
			r := NewEscapeReader(src, func() { quits++ })

			var got []byte
			var err error
			buf := make([]byte, 3)
			for i := 0; err == nil; i++ {
				require.Less(t, i, 100, "reader never ends")
				var n int
				n, err = r.Read(buf)
				got = append(got, buf[:n]...)
			}
			assert.ErrorIs(t, err, tt.wantErr)
			assert.Equal(t, tt.want, string(got))
			assert.Equal(t, tt.quits, quits)

			// Ended for good, and onQuit is not called again.
			n, err := r.Read(buf)
			assert.Zero(t, n)
			assert.ErrorIs(t, err, tt.wantErr)
			assert.Equal(t, tt.quits, quits)
		})
	}
}

// One byte at a time is the worst split; the decoding must not change.
func TestEscapeReaderOneByteReads(t *testing.T) {
	quits := 0
	in := "a\x01\x01b\x01cd\x01xignored"
	r := NewEscapeReader(iotest.OneByteReader(&chunks{parts: [][]byte{[]byte(in)}, err: io.EOF}), func() { quits++ })
	got, err := io.ReadAll(iotest.OneByteReader(r))
	require.NoError(t, err)
	assert.Equal(t, "a\x01b\x01cd", string(got))
	assert.Equal(t, 1, quits)
}

func TestEscapeReaderLargeInput(t *testing.T) {
	// Ctrl-A c pairs after one plain byte: every readSize boundary splits
	// a pair, so a Ctrl-A is held over and the output runs a byte ahead.
	in := make([]byte, 3*readSize+1)
	in[0] = 'z'
	for i := 1; i < len(in); i++ {
		in[i] = 'c'
		if i%2 == 1 {
			in[i] = escapeChar
		}
	}
	r := NewEscapeReader(&chunks{parts: [][]byte{in}, err: io.EOF}, func() { t.Error("unexpected quit") })
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, in, got)
}
