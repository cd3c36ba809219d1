package main

import "encoding/binary"

// rng is splitmix64: garbage that is the same on every run, so a run
// that finds something can be repeated.
type rng struct{ s uint64 }

func newRand(seed uint64) *rng { return &rng{seed} }

func (r *rng) u64() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func (r *rng) u32() uint32 { return uint32(r.u64()) }

func (r *rng) fill(b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, r.u64())
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(r.u64())
	}
}
