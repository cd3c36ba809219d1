package vsock

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

func rawHeader(h Header) []byte {
	b := make([]byte, HeaderSize)
	h.Put(b)
	return b
}

// FuzzParsePacket feeds the tx packet parser a chain of up to three
// buffers cut from the input: it must not panic, and an accepted RW
// packet's payload is exactly its header's len.
func FuzzParsePacket(f *testing.F) {
	rw := hdr(OpRW, 1, 2)
	rw.Len = 5
	f.Add(append(rawHeader(rw), "hello"...), uint8(44), uint8(2))
	f.Add(rawHeader(hdr(OpRequest, 1, 2)), uint8(10), uint8(30))
	f.Add([]byte{1, 2, 3}, uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2 uint8) {
		mem := virtiotest.NewMemory(1 << 16)
		if len(data) > 1<<15 {
			return
		}
		require.NoError(t, mem.WriteAt(data, 0))
		a := min(int(cut1), len(data))
		b := min(a+int(cut2), len(data))
		var c queue.Chain
		for _, r := range [][2]int{{0, a}, {a, b}, {b, len(data)}} {
			c.Readable = append(c.Readable, queue.Buffer{Addr: memory.GuestAddress(r[0]), Len: uint32(r[1] - r[0])})
		}
		p, err := ParsePacket(c, mem, BufAlloc)
		if err == nil && p.Op == OpRW {
			require.Equal(t, uint64(p.Len), p.Data.len())
		}
	})
}

// FuzzDevice sends the device up to 32 packets built from the input
// (a 44-byte header and a payload length byte each; the source CID is
// the guest's unless the input says otherwise) with a listener and a
// dialer on the host side: the device must neither panic nor hang, and
// keep within its connection limit.
func FuzzDevice(f *testing.F) {
	seq := func(hs ...Header) []byte {
		var b []byte
		for _, h := range hs {
			b = append(b, rawHeader(h)...)
			b = append(b, byte(h.Len))
		}
		return b
	}
	rw := hdr(OpRW, 9, 80)
	rw.Len = 7
	shut := hdr(OpShutdown, 9, 80)
	shut.Flags = shutdownBoth
	f.Add(seq(hdr(OpRequest, 9, 80), rw, hdr(OpCreditRequest, 9, 80), shut))
	f.Add(seq(hdr(OpRequest, 9, 81), rw, hdr(OpRST, 9, 81), rw))
	f.Add(seq(hdr(OpResponse, 9, 80), hdr(OpRequest, 9, 80), hdr(OpRequest, 9, 80)))
	f.Add(seq(hdr(OpRW, 1, 1), hdr(99, 1, 1), hdr(OpCreditUpdate, 2, 2)))
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxConns = 4
		dial := func(_ context.Context, _ uint32) (net.Conn, error) {
			ours, theirs := net.Pipe()
			go func() { _, _ = io.Copy(theirs, theirs) }()
			return ours, nil
		}
		r := newRig(t, Options{MaxConns: maxConns, Dial: dial})
		r.postRx(64)
		l := listen(t, r, 80)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(io.Discard, c) }()
			}
		}()
		for i := 0; len(data) >= HeaderSize+1 && i < 32; i++ {
			h, _ := ParseHeader(data)
			if data[0]&1 == 0 { // most packets from the guest's own CID
				h.SrcCID = guestCID
			}
			n := int(data[HeaderSize])
			data = data[HeaderSize+1:]
			payload := make([]byte, n)
			for j := range payload {
				payload[j] = byte(i)
			}
			raw := rawHeader(h)
			r.awaitTx(t, r.sendRaw([]virtiotest.Buf{{Data: raw}, {Data: payload}}))
			require.LessOrEqual(t, r.d.Stats().Conns, maxConns)
			for {
				if _, _, ok := r.tryRecv(0); !ok {
					break
				}
			}
		}
	})
}
