package blk

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// Request types (spec 5.2.6).
const (
	TypeIn          = 0
	TypeOut         = 1
	TypeFlush       = 4
	TypeGetID       = 8
	TypeDiscard     = 11
	TypeWriteZeroes = 13
)

// Status byte values.
const (
	StatusOK          = 0
	StatusIOErr       = 1
	StatusUnsupported = 2
)

const (
	headerSize       = 16 // type, reserved (ioprio), sector
	rangeSize        = 16 // struct virtio_blk_discard_write_zeroes
	rangeFlagUnmap   = 1
	maxDataLen       = SegMax * SizeMax
	maxRangeSegments = 8                      // of maxRangeSectors: 1 GiB a request, as zeroing may write it all
	maxRangeSectors  = 128 << 20 / SectorSize // Linux's limit of a whole discard or write-zeroes request
)

// Errors ParseRequest wraps in a *RequestError. All but ErrUnsupported
// complete the request with VIRTIO_BLK_S_IOERR; ErrNoStatus means there is
// no status byte to complete it with.
var (
	ErrNoStatus        = errors.New("no device-writable status byte")
	ErrHeader          = errors.New("request header not device-readable")
	ErrBuffer          = errors.New("data buffer outside guest memory")
	ErrDirection       = errors.New("data buffers in the wrong direction for the request type")
	ErrDataLength      = errors.New("data length not a multiple of 512")
	ErrPastEnd         = errors.New("sectors past the end of the disk")
	ErrTooLarge        = errors.New("request larger than the advertised limits")
	ErrSegmentLength   = errors.New("discard/write-zeroes data not a non-zero multiple of 16 bytes")
	ErrTooManySegments = errors.New("more discard/write-zeroes segments than advertised")
	ErrUnsupported     = errors.New("unsupported request")
)

// RequestError is a malformed or unsupported request.
type RequestError struct {
	Type   uint32
	Sector uint64
	Err    error
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("virtio-blk request type %d, sector %d: %v", e.Type, e.Sector, e.Err)
}

func (e *RequestError) Unwrap() error { return e.Err }

// Range is one discard or write-zeroes segment.
type Range struct {
	Sector  uint64
	Sectors uint32
	Unmap   bool
}

// Request is a parsed virtio-blk request.
type Request struct {
	Type   uint32
	Sector uint64
	// Data is the data area without header and status byte:
	// device-writable for IN and GET_ID, device-readable for OUT. Every
	// buffer is inside guest memory.
	Data   []queue.Buffer
	Ranges []Range // DISCARD and WRITE_ZEROES
	// Status is the status byte, valid unless the error is ErrNoStatus.
	Status memory.GuestAddress
}

// segments is part of a chain's readable or writable area.
type segments []queue.Buffer

func (s segments) len() uint64 {
	var n uint64
	for _, b := range s {
		n += uint64(b.Len)
	}
	return n
}

// split returns the first n bytes of s and the rest, dividing a buffer if
// n falls inside it. Empty buffers carry no bytes and are dropped, so the
// rest starts with its first byte.
func (s segments) split(n uint64) (segments, segments) {
	var head segments
	for i, b := range s {
		if b.Len == 0 {
			continue
		}
		if n == 0 {
			return head, s[i:]
		}
		if uint64(b.Len) > n {
			head = append(head, queue.Buffer{Addr: b.Addr, Len: uint32(n)})
			rest := append(segments{{Addr: b.Addr + memory.GuestAddress(n), Len: b.Len - uint32(n)}}, s[i+1:]...)
			return head, rest
		}
		head = append(head, b)
		n -= uint64(b.Len)
	}
	return head, nil
}

// read copies s out of guest memory.
func (s segments) read(mem *memory.Memory) ([]byte, error) {
	out := make([]byte, 0, s.len())
	for _, b := range s {
		p, err := mem.Slice(b.Addr, uint64(b.Len))
		if err != nil {
			return nil, err
		}
		out = append(out, p...)
	}
	return out, nil
}

// ParseRequest decodes the chain of one request: a 16-byte header at the
// start of the device-readable area, the status byte at the end of the
// device-writable area and the data between, however the driver split
// them into descriptors. It touches guest memory only to read the header
// and discard ranges, every access checked, and never the disk.
func ParseRequest(c queue.Chain, mem *memory.Memory, capacity uint64) (Request, error) {
	var req Request
	writable := segments(c.Writable)
	wlen := writable.len()
	if wlen == 0 {
		return req, &RequestError{Err: ErrNoStatus}
	}
	dataIn, status := writable.split(wlen - 1)
	req.Status = status[0].Addr
	if _, err := mem.Slice(req.Status, 1); err != nil {
		return req, &RequestError{Err: fmt.Errorf("%w: %w", ErrNoStatus, err)}
	}
	fail := func(err error) (Request, error) {
		return req, &RequestError{Type: req.Type, Sector: req.Sector, Err: err}
	}

	hdrSegs, dataOut := segments(c.Readable).split(headerSize)
	if hdrSegs.len() < headerSize {
		return fail(ErrHeader)
	}
	hdr, err := hdrSegs.read(mem)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrHeader, err))
	}
	req.Type = binary.LittleEndian.Uint32(hdr[0:])
	req.Sector = binary.LittleEndian.Uint64(hdr[8:])

	switch req.Type {
	case TypeIn, TypeGetID:
		if dataOut.len() != 0 {
			return fail(ErrDirection)
		}
		req.Data = dataIn
	case TypeOut, TypeDiscard, TypeWriteZeroes:
		if dataIn.len() != 0 {
			return fail(ErrDirection)
		}
		req.Data = dataOut
	case TypeFlush:
		// The driver SHOULD NOT send data with a flush; any is ignored.
		return req, nil
	default:
		return fail(ErrUnsupported)
	}
	for _, b := range req.Data {
		if _, err := mem.Slice(b.Addr, uint64(b.Len)); err != nil {
			return fail(fmt.Errorf("%w: %w", ErrBuffer, err))
		}
	}
	n := segments(req.Data).len()
	if n > maxDataLen {
		return fail(ErrTooLarge)
	}
	switch req.Type {
	case TypeIn, TypeOut:
		if n%SectorSize != 0 {
			return fail(ErrDataLength)
		}
		if !inDisk(req.Sector, n/SectorSize, capacity) {
			return fail(ErrPastEnd)
		}
	case TypeDiscard, TypeWriteZeroes:
		if req.Ranges, err = parseRanges(segments(req.Data), mem, req.Type, capacity); err != nil {
			return fail(err)
		}
	}
	return req, nil
}

func inDisk(sector, sectors, capacity uint64) bool {
	return sector <= capacity && sectors <= capacity-sector
}

func parseRanges(data segments, mem *memory.Memory, typ uint32, capacity uint64) ([]Range, error) {
	n := data.len()
	if n == 0 || n%rangeSize != 0 {
		return nil, ErrSegmentLength
	}
	if n/rangeSize > maxRangeSegments {
		return nil, ErrTooManySegments
	}
	raw, err := data.read(mem)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBuffer, err)
	}
	ranges := make([]Range, n/rangeSize)
	for i := range ranges {
		b := raw[i*rangeSize:]
		flags := binary.LittleEndian.Uint32(b[12:])
		r := Range{
			Sector:  binary.LittleEndian.Uint64(b[0:]),
			Sectors: binary.LittleEndian.Uint32(b[8:]),
			Unmap:   flags&rangeFlagUnmap != 0,
		}
		// Unknown flags, and unmap on a discard, must be UNSUPP (5.2.6.2).
		if flags&^rangeFlagUnmap != 0 || r.Unmap && typ == TypeDiscard {
			return nil, fmt.Errorf("%w: segment flags %#x", ErrUnsupported, flags)
		}
		if r.Sectors > maxRangeSectors {
			return nil, ErrTooLarge
		}
		if !inDisk(r.Sector, uint64(r.Sectors), capacity) {
			return nil, ErrPastEnd
		}
		ranges[i] = r
	}
	return ranges, nil
}
