// Package pattern generates the deterministic pseudo-random disk contents
// that the disk tests write on one side (guest or host) and check on the
// other. Byte i of the stream for a seed depends only on (seed, i), so any
// range can be produced or checked on its own: word i/8 is the SplitMix64
// output for seed+(i/8)·γ, in little-endian byte order.
package pattern

import (
	"bytes"
	"encoding/binary"
	"io"
)

// gamma is SplitMix64's increment (the golden ratio in 64-bit fixed point).
const gamma = 0x9e3779b97f4a7c15

// word returns the stream's n-th 64-bit word for seed.
func word(seed, n uint64) uint64 {
	z := seed + (n+1)*gamma
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Fill writes the stream's bytes [off, off+len(p)) for seed into p.
// A negative off panics: callers pass offsets they computed themselves.
func Fill(p []byte, seed uint64, off int64) {
	if off < 0 {
		panic("pattern: negative offset")
	}
	pos := uint64(off)
	// A leading partial word.
	if r := pos % 8; r != 0 && len(p) > 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], word(seed, pos/8))
		n := copy(p, w[r:])
		p, pos = p[n:], pos+uint64(n)
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, word(seed, pos/8))
		p, pos = p[8:], pos+8
	}
	if len(p) > 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], word(seed, pos/8))
		copy(p, w[:])
	}
}

// Mismatch returns the offset, counted from the start of p, of the first
// byte of p that differs from the stream's bytes [off, off+len(p)) for
// seed, or -1 when p matches.
func Mismatch(p []byte, seed uint64, off int64) int64 {
	var want [4096]byte
	for done := 0; done < len(p); {
		n := min(len(want), len(p)-done)
		Fill(want[:n], seed, off+int64(done))
		if !bytes.Equal(p[done:done+n], want[:n]) {
			for i := 0; i < n; i++ {
				if p[done+i] != want[i] {
					return int64(done + i)
				}
			}
		}
		done += n
	}
	return -1
}

// Reader returns the stream's bytes [off, off+n) for seed as a reader.
func Reader(seed uint64, off, n int64) io.Reader {
	return &reader{seed: seed, pos: off, end: off + n}
}

type reader struct {
	seed     uint64
	pos, end int64
}

func (r *reader) Read(p []byte) (int, error) {
	if r.pos >= r.end {
		return 0, io.EOF
	}
	if rest := r.end - r.pos; int64(len(p)) > rest {
		p = p[:rest]
	}
	Fill(p, r.seed, r.pos)
	r.pos += int64(len(p))
	return len(p), nil
}
