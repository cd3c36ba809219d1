package blk

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

const testCapacity = 100

// seg is one buffer of a hand-built chain.
type seg struct {
	data  []byte // readable contents
	n     uint32 // writable length
	write bool
	addr  memory.GuestAddress // explicit address, e.g. outside memory
}

// chainBuilder lays buffers out in a fake guest memory.
type chainBuilder struct {
	mem  *memory.Memory
	next memory.GuestAddress
}

func newChainBuilder() *chainBuilder {
	return &chainBuilder{mem: virtiotest.NewMemory(1 << 20), next: 0x1000}
}

func (b *chainBuilder) chain(segs ...seg) queue.Chain {
	var c queue.Chain
	for _, s := range segs {
		n := s.n
		if !s.write {
			n = uint32(len(s.data))
		}
		addr := s.addr
		if addr == 0 {
			addr = b.next
			b.next += memory.GuestAddress(n+15) &^ 15
			if !s.write {
				if err := b.mem.WriteAt(s.data, addr); err != nil {
					panic(err)
				}
			}
		}
		buf := queue.Buffer{Addr: addr, Len: n}
		if s.write {
			c.Writable = append(c.Writable, buf)
		} else {
			c.Readable = append(c.Readable, buf)
		}
	}
	return c
}

func header(typ uint32, sector uint64) []byte {
	h := make([]byte, headerSize)
	binary.LittleEndian.PutUint32(h, typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	return h
}

func rangeBytes(rs ...[3]uint64) []byte {
	var out []byte
	for _, r := range rs {
		b := make([]byte, rangeSize)
		binary.LittleEndian.PutUint64(b, r[0])
		binary.LittleEndian.PutUint32(b[8:], uint32(r[1]))
		binary.LittleEndian.PutUint32(b[12:], uint32(r[2]))
		out = append(out, b...)
	}
	return out
}

func rd(n uint32) seg { return seg{n: n, write: true} }
func ro(b []byte) seg { return seg{data: b} }

var status = rd(1)

// oversized is a read whose overlapping buffers add up to more than
// SegMax*SizeMax bytes.
func oversized() []seg {
	segs := []seg{ro(header(TypeIn, 0))}
	for range SegMax + 1 {
		segs = append(segs, seg{n: SizeMax - 16, write: true, addr: 16})
	}
	return append(segs, status)
}

// parseCases are shared by the table test and the fuzz seeds.
var parseCases = []struct {
	name string
	segs []seg
	want error
}{
	{"read", []seg{ro(header(TypeIn, 2)), rd(1024), status}, nil},
	{"read to the last sector", []seg{ro(header(TypeIn, testCapacity-1)), rd(512), status}, nil},
	{"read split across descriptors", []seg{ro(header(TypeIn, 0)[:5]), ro(header(TypeIn, 0)[5:]), rd(700), rd(325)}, nil},
	{"write", []seg{ro(header(TypeOut, 0)), ro(make([]byte, 512)), status}, nil},
	{"write data in the header descriptor", []seg{ro(append(header(TypeOut, 0), make([]byte, 512)...)), status}, nil},
	{"flush", []seg{ro(header(TypeFlush, 0)), status}, nil},
	{"get id", []seg{ro(header(TypeGetID, 0)), rd(20), status}, nil},
	{"discard", []seg{ro(header(TypeDiscard, 0)), ro(rangeBytes([3]uint64{8, 8, 0}, [3]uint64{32, 8, 0})), status}, nil},
	{"write zeroes with unmap", []seg{ro(header(TypeWriteZeroes, 0)), ro(rangeBytes([3]uint64{0, 16, 1})), status}, nil},
	{"empty chain", nil, ErrNoStatus},
	{"header only", []seg{ro(header(TypeIn, 0))}, ErrNoStatus},
	{"status outside memory", []seg{ro(header(TypeIn, 0)), {n: 1, write: true, addr: 1 << 30}}, ErrNoStatus},
	{"no header", []seg{status}, ErrHeader},
	{"short header", []seg{ro(header(TypeIn, 0)[:12]), status}, ErrHeader},
	{"header outside memory", []seg{{data: make([]byte, 16), addr: 1 << 30}, status}, ErrHeader},
	{"read with readable data", []seg{ro(header(TypeIn, 0)), ro(make([]byte, 512)), status}, ErrDirection},
	{"write with writable data", []seg{ro(header(TypeOut, 0)), rd(512), status}, ErrDirection},
	{"get id with readable data", []seg{ro(header(TypeGetID, 0)), ro(make([]byte, 20)), status}, ErrDirection},
	{"read of 100 bytes", []seg{ro(header(TypeIn, 0)), rd(100), status}, ErrDataLength},
	{"write of 513 bytes", []seg{ro(header(TypeOut, 0)), ro(make([]byte, 513)), status}, ErrDataLength},
	{"read past the end", []seg{ro(header(TypeIn, testCapacity-1)), rd(1024), status}, ErrPastEnd},
	{"read at sector 2^63", []seg{ro(header(TypeIn, 1<<63)), rd(512), status}, ErrPastEnd},
	{"write past the end", []seg{ro(header(TypeOut, testCapacity)), ro(make([]byte, 512)), status}, ErrPastEnd},
	{"data outside memory", []seg{ro(header(TypeIn, 0)), {n: 512, write: true, addr: 1 << 30}, status}, ErrBuffer},
	{"read above limits", oversized(), ErrTooLarge},
	{"unknown type", []seg{ro(header(99, 0)), status}, ErrUnsupported},
	{"get lifetime", []seg{ro(header(10, 0)), rd(8), status}, ErrUnsupported},
	{"discard with unmap", []seg{ro(header(TypeDiscard, 0)), ro(rangeBytes([3]uint64{0, 8, 1})), status}, ErrUnsupported},
	{"unknown range flag", []seg{ro(header(TypeWriteZeroes, 0)), ro(rangeBytes([3]uint64{0, 8, 2})), status}, ErrUnsupported},
	{"discard of 8 bytes", []seg{ro(header(TypeDiscard, 0)), ro(make([]byte, 8)), status}, ErrSegmentLength},
	{"discard without ranges", []seg{ro(header(TypeDiscard, 0)), status}, ErrSegmentLength},
	{"too many discard ranges", []seg{ro(header(TypeDiscard, 0)), ro(make([]byte, rangeSize*(maxRangeSegments+1))), status}, ErrTooManySegments},
	{"discard past the end", []seg{ro(header(TypeDiscard, 0)), ro(rangeBytes([3]uint64{testCapacity - 4, 8, 0})), status}, ErrPastEnd},
	{"discard too long", []seg{ro(header(TypeDiscard, 0)), ro(rangeBytes([3]uint64{0, maxRangeSectors + 1, 0})), status}, ErrTooLarge},
	{"write zeroes in the wrong direction", []seg{ro(header(TypeWriteZeroes, 0)), rd(16), status}, ErrDirection},
}

func TestParseRequest(t *testing.T) {
	for _, tt := range parseCases {
		t.Run(tt.name, func(t *testing.T) {
			b := newChainBuilder()
			c := b.chain(tt.segs...)
			req, err := ParseRequest(c, b.mem, testCapacity)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
				var re *RequestError
				assert.ErrorAs(t, err, &re)
				if tt.want != ErrNoStatus {
					last := c.Writable[len(c.Writable)-1]
					assert.Equal(t, last.Addr+memory.GuestAddress(last.Len-1), req.Status, "status still located")
				}
				return
			}
			require.NoError(t, err)
			last := c.Writable[len(c.Writable)-1]
			assert.Equal(t, last.Addr+memory.GuestAddress(last.Len-1), req.Status)
		})
	}
}

func TestParseRequestLayout(t *testing.T) {
	b := newChainBuilder()
	hdr := header(TypeIn, 7)
	c := b.chain(ro(hdr[:10]), ro(hdr[10:]), rd(700), seg{n: 0, write: true}, rd(325))
	req, err := ParseRequest(c, b.mem, testCapacity)
	require.NoError(t, err)
	assert.Equal(t, uint32(TypeIn), req.Type)
	assert.Equal(t, uint64(7), req.Sector)
	w := c.Writable
	assert.Equal(t, []queue.Buffer{w[0], {Addr: w[2].Addr, Len: 324}}, req.Data, "status byte split off the last buffer")
	assert.Equal(t, w[2].Addr+324, req.Status)

	c = b.chain(ro(append(header(TypeDiscard, 0), rangeBytes([3]uint64{8, 16, 0})...)), status)
	req, err = ParseRequest(c, b.mem, testCapacity)
	require.NoError(t, err)
	assert.Equal(t, []Range{{Sector: 8, Sectors: 16}}, req.Ranges)
	assert.Equal(t, []queue.Buffer{{Addr: c.Readable[0].Addr + headerSize, Len: rangeSize}}, req.Data)
}
