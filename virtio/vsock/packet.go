package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// HeaderSize is the size of struct virtio_vsock_hdr (spec 5.10.6).
const HeaderSize = 44

// struct virtio_vsock_hdr field offsets.
const (
	hdrSrcCID   = 0
	hdrDstCID   = 8
	hdrSrcPort  = 16
	hdrDstPort  = 20
	hdrLen      = 24
	hdrType     = 28
	hdrOp       = 30
	hdrFlags    = 32
	hdrBufAlloc = 36
	hdrFwdCnt   = 40
)

// TypeStream is VIRTIO_VSOCK_TYPE_STREAM, the only socket type offered.
const TypeStream = 1

// Op is a packet's operation (VIRTIO_VSOCK_OP_*).
type Op uint16

// Operations.
const (
	OpInvalid       Op = 0
	OpRequest       Op = 1
	OpResponse      Op = 2
	OpRST           Op = 3
	OpShutdown      Op = 4
	OpRW            Op = 5
	OpCreditUpdate  Op = 6
	OpCreditRequest Op = 7
)

func (o Op) String() string {
	names := [...]string{"INVALID", "REQUEST", "RESPONSE", "RST", "SHUTDOWN", "RW", "CREDIT_UPDATE", "CREDIT_REQUEST"}
	if int(o) < len(names) {
		return names[o]
	}
	return fmt.Sprintf("Op(%d)", uint16(o))
}

// Shutdown flags: the sender will receive (ShutdownRecv) or send
// (ShutdownSend) no more.
const (
	ShutdownRecv = 1
	ShutdownSend = 2
	shutdownBoth = ShutdownRecv | ShutdownSend
)

// HostCID is the well-known address of the host.
const HostCID = 2

// Header is a decoded struct virtio_vsock_hdr.
type Header struct {
	SrcCID, DstCID   uint64
	SrcPort, DstPort uint32
	Len              uint32
	Type             uint16
	Op               Op
	Flags            uint32
	BufAlloc, FwdCnt uint32
}

// ParseHeader decodes a header from the first HeaderSize bytes of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrShortHeader, len(b))
	}
	le := binary.LittleEndian
	return Header{
		SrcCID:   le.Uint64(b[hdrSrcCID:]),
		DstCID:   le.Uint64(b[hdrDstCID:]),
		SrcPort:  le.Uint32(b[hdrSrcPort:]),
		DstPort:  le.Uint32(b[hdrDstPort:]),
		Len:      le.Uint32(b[hdrLen:]),
		Type:     le.Uint16(b[hdrType:]),
		Op:       Op(le.Uint16(b[hdrOp:])),
		Flags:    le.Uint32(b[hdrFlags:]),
		BufAlloc: le.Uint32(b[hdrBufAlloc:]),
		FwdCnt:   le.Uint32(b[hdrFwdCnt:]),
	}, nil
}

// Put encodes h into the first HeaderSize bytes of b.
func (h Header) Put(b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b[hdrSrcCID:], h.SrcCID)
	le.PutUint64(b[hdrDstCID:], h.DstCID)
	le.PutUint32(b[hdrSrcPort:], h.SrcPort)
	le.PutUint32(b[hdrDstPort:], h.DstPort)
	le.PutUint32(b[hdrLen:], h.Len)
	le.PutUint16(b[hdrType:], h.Type)
	le.PutUint16(b[hdrOp:], uint16(h.Op))
	le.PutUint32(b[hdrFlags:], h.Flags)
	le.PutUint32(b[hdrBufAlloc:], h.BufAlloc)
	le.PutUint32(b[hdrFwdCnt:], h.FwdCnt)
}

// Errors of packet parsing: the driver broke the protocol for one packet.
var (
	ErrShortHeader = errors.New("vsock packet shorter than its header")
	ErrWriteOnly   = errors.New("vsock tx chain with device-writable buffers")
	ErrShortData   = errors.New("vsock packet shorter than its header's len")
	ErrTooLong     = errors.New("vsock packet payload larger than the device accepts")
)

// Packet is a tx packet: its header and where its payload lies in guest
// memory.
type Packet struct {
	Header
	Data segments
}

// segment is a checked range of guest memory.
type segment struct {
	addr memory.GuestAddress
	n    uint64
}

// segments is a byte stream spread over guest buffers.
type segments []segment

func fromBuffers(bufs []queue.Buffer) segments {
	s := make(segments, 0, len(bufs))
	for _, b := range bufs {
		if b.Len > 0 {
			s = append(s, segment{b.Addr, uint64(b.Len)})
		}
	}
	return s
}

func (s segments) len() uint64 {
	var n uint64
	for _, g := range s {
		n += g.n
	}
	return n
}

// split returns the first n bytes of s and the rest.
func (s segments) split(n uint64) (head, tail segments) {
	for i, g := range s {
		if n == 0 {
			return head, s[i:]
		}
		if g.n > n {
			head = append(head, segment{g.addr, n})
			tail = append(segments{{g.addr + memory.GuestAddress(n), g.n - n}}, s[i+1:]...)
			return head, tail
		}
		head = append(head, g)
		n -= g.n
	}
	return head, nil
}

// copyOut copies the stream into p, which must not be longer than it.
func (s segments) copyOut(mem *memory.Memory, p []byte) error {
	for _, g := range s {
		if len(p) == 0 {
			break
		}
		n := min(uint64(len(p)), g.n)
		if err := mem.ReadAt(p[:n], g.addr); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// copyIn writes p at the start of the stream and returns the bytes
// written: all of p, or the stream's length if shorter.
func (s segments) copyIn(mem *memory.Memory, p []byte) (int, error) {
	done := 0
	for _, g := range s {
		if done == len(p) {
			break
		}
		n := min(uint64(len(p)-done), g.n)
		if err := mem.WriteAt(p[done:done+int(n)], g.addr); err != nil {
			return done, err
		}
		done += int(n)
	}
	return done, nil
}

// ParsePacket decodes a tx chain: a header in the device-readable
// buffers, followed by hdr.Len bytes of payload, at most maxData. A
// chain longer than header and payload is accepted (its tail unused),
// as Linux drivers never send one but the spec does not forbid it.
func ParsePacket(c queue.Chain, mem *memory.Memory, maxData uint32) (Packet, error) {
	if len(c.Writable) > 0 {
		return Packet{}, ErrWriteOnly
	}
	s := fromBuffers(c.Readable)
	total := s.len()
	if total < HeaderSize {
		return Packet{}, fmt.Errorf("%w: %d bytes", ErrShortHeader, total)
	}
	hs, rest := s.split(HeaderSize)
	var hb [HeaderSize]byte
	if err := hs.copyOut(mem, hb[:]); err != nil {
		return Packet{}, err
	}
	h, err := ParseHeader(hb[:])
	if err != nil {
		return Packet{}, err
	}
	p := Packet{Header: h}
	if h.Op != OpRW || h.Len == 0 {
		return p, nil // only RW carries a payload; Linux sets len 0 otherwise
	}
	if h.Len > maxData {
		return p, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLong, h.Len, maxData)
	}
	if rest.len() < uint64(h.Len) {
		return p, fmt.Errorf("%w: len %d, %d bytes after the header", ErrShortData, h.Len, rest.len())
	}
	p.Data, _ = rest.split(uint64(h.Len))
	return p, nil
}
