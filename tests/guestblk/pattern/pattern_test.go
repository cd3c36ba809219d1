package pattern_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/tests/guestblk/pattern"
)

func fill(n int, seed uint64, off int64) []byte {
	p := make([]byte, n)
	pattern.Fill(p, seed, off)
	return p
}

// TestKnownVector pins the stream: guest and host binaries are built from
// the same source, but a silent change would also invalidate images kept
// for debugging.
func TestKnownVector(t *testing.T) {
	tests := []struct {
		seed uint64
		want string
	}{
		// SplitMix64 seeded with 0 and 1 starts with 0xe220a8397b1dcdaf and
		// 0x910a2dec89025cc1 (little-endian here).
		{0, "afcd1d7b39a820e2"},
		{1, "c15c0289ec2d0a91"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, hex.EncodeToString(fill(8, tt.seed, 0)), "seed %d", tt.seed)
	}
}

func TestAnyRangeMatchesTheWholeStream(t *testing.T) {
	const seed = 42
	whole := fill(4096, seed, 0)
	tests := []struct {
		name   string
		off, n int
	}{
		{"aligned", 64, 512},
		{"unaligned start", 3, 100},
		{"unaligned end", 8, 13},
		{"inside one word", 9, 5},
		{"single byte", 4095, 1},
		{"empty", 17, 0},
		{"all", 0, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, whole[tt.off:tt.off+tt.n], fill(tt.n, seed, int64(tt.off)))
			got, err := io.ReadAll(pattern.Reader(seed, int64(tt.off), int64(tt.n)))
			require.NoError(t, err)
			assert.Equal(t, whole[tt.off:tt.off+tt.n], append([]byte{}, got...))
		})
	}
}

func TestSeedsAndOffsetsDiffer(t *testing.T) {
	a, b := fill(1<<16, 1, 0), fill(1<<16, 2, 0)
	assert.NotEqual(t, a, b)
	assert.NotEqual(t, a[:4096], a[4096:8192], "the stream must not repeat per block")
	assert.NotEqual(t, fill(512, 1, 0), fill(512, 1, 1<<20))
	// Roughly balanced bits: a broken mixer shows up here.
	ones := 0
	for _, c := range a {
		for ; c != 0; c &= c - 1 {
			ones++
		}
	}
	assert.InEpsilon(t, len(a)*4, ones, 0.02)
}

func TestMismatch(t *testing.T) {
	const seed, off = 7, 12345
	good := fill(10000, seed, off)
	tests := []struct {
		name string
		flip int // -1: none
		want int64
	}{
		{"match", -1, -1},
		{"first byte", 0, 0},
		{"in a later block", 5000, 5000},
		{"last byte", 9999, 9999},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := bytes.Clone(good)
			if tt.flip >= 0 {
				p[tt.flip] ^= 0x10
			}
			assert.Equal(t, tt.want, pattern.Mismatch(p, seed, off))
		})
	}
	assert.Equal(t, int64(0), pattern.Mismatch(make([]byte, 64), seed, 0), "zeros are not the pattern")
}

func TestReaderHashesLikeFill(t *testing.T) {
	const n = 3<<20 + 17
	h := sha256.New()
	_, err := io.CopyBuffer(h, pattern.Reader(9, 5, n), make([]byte, 4093))
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256(fill(n, 9, 5)), [32]byte(h.Sum(nil)))
}

func TestNegativeOffsetPanics(t *testing.T) {
	assert.Panics(t, func() { pattern.Fill(make([]byte, 8), 1, -8) })
}
