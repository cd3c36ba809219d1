package blk

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

const (
	fuzzMemSize   = 64 << 10
	fuzzRecord    = 9 // write flag, address, length
	fuzzMaxRecord = 16
)

// decodeFuzzChain reads a chain and a guest memory image from a fuzz
// input: a record count, that many (flags, addr, len) records, a capacity
// byte, then the memory contents.
func decodeFuzzChain(data []byte) (queue.Chain, *memory.Memory, uint64, bool) {
	var c queue.Chain
	if len(data) < 2 {
		return c, nil, 0, false
	}
	n := int(data[0]) % fuzzMaxRecord
	data = data[1:]
	if len(data) < n*fuzzRecord+1 {
		return c, nil, 0, false
	}
	for i := 0; i < n; i++ {
		r := data[i*fuzzRecord:]
		b := queue.Buffer{Addr: memory.GuestAddress(binary.LittleEndian.Uint32(r[1:])), Len: binary.LittleEndian.Uint32(r[5:])}
		if r[0]&1 != 0 {
			c.Writable = append(c.Writable, b)
		} else {
			c.Readable = append(c.Readable, b)
		}
	}
	capacity := uint64(data[n*fuzzRecord])
	image := make([]byte, fuzzMemSize)
	copy(image, data[n*fuzzRecord+1:])
	mem, err := memory.New(memory.Region{Data: image})
	if err != nil {
		panic(err)
	}
	return c, mem, capacity, true
}

// FuzzParseRequest checks that ParseRequest never panics and that what it
// accepts is safe to execute: buffers and status in guest memory, sectors
// inside the disk.
func FuzzParseRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c, mem, capacity, ok := decodeFuzzChain(data)
		if !ok {
			return
		}
		req, err := ParseRequest(c, mem, capacity)
		if errors.Is(err, ErrNoStatus) {
			return
		}
		if _, serr := mem.Slice(req.Status, 1); serr != nil {
			t.Fatalf("status outside memory with err %v", err)
		}
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		var total uint64
		for _, b := range req.Data {
			if _, err := mem.Slice(b.Addr, uint64(b.Len)); err != nil {
				t.Fatalf("data buffer outside memory: %v", err)
			}
			total += uint64(b.Len)
		}
		switch req.Type {
		case TypeIn, TypeOut:
			if total%SectorSize != 0 || !inDisk(req.Sector, total/SectorSize, capacity) {
				t.Fatalf("accepted %d bytes at sector %d of %d", total, req.Sector, capacity)
			}
		case TypeDiscard, TypeWriteZeroes:
			for _, r := range req.Ranges {
				if !inDisk(r.Sector, uint64(r.Sectors), capacity) {
					t.Fatalf("accepted range %+v of %d", r, capacity)
				}
			}
		}
	})
}
