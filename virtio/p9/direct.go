package p9

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/virtio/internal/iov"
)

// Answers of the direct transfers.
const (
	msgRread  = msgTread + 1
	msgRwrite = msgTwrite + 1
)

// twriteHeader is Twrite's header, fid[4] offset[8] and count[4]: its
// data follows.
const twriteHeader = HeaderSize + 16

// The device moves the data of reads and writes of open regular files
// itself, between the file and guest memory, as QEMU does: through the
// 9P server a read's data would be copied three times more (into the
// server's buffer, its message, and our session's), a write's once more
// (into the server's buffer), and each would be handed between
// goroutines. It does so on the queue's
// thread, where a goroutine per read cost 10 to 25 % of the throughput
// (Benchmark9p); a transfer stalled by a slow host file system so holds
// up the share's later requests, never a vCPU. Other fids (not open as
// the request needs, folders, O_DIRECT) go to the server, as do requests
// whose answer's header would not fit.

// openFid returns the QID path and open flags of fid if the device saw
// it opened, as a regular file without O_DIRECT, for access (O_RDONLY
// for reads, O_WRONLY for writes; O_RDWR serves both).
func (s *session) openFid(fid uint32, access uint32) (qid uint64, flags uint32, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.fids[fid]
	if r == nil || !r.open || r.dir || r.flags&unix.O_DIRECT != 0 {
		return 0, 0, false
	}
	if mode := r.flags & unix.O_ACCMODE; mode != unix.O_RDWR && mode != access {
		return 0, 0, false
	}
	return r.qid, r.flags, true
}

// readDirect answers Tread p, whose validated message is msg, with one
// preadv into the answer's buffers after its header. It reports false,
// having done nothing, when the server must answer instead.
func (d *Device) readDirect(p *pending, msg []byte) bool {
	le := binary.LittleEndian
	body := msg[HeaderSize:]
	fid, off, count := le.Uint32(body), le.Uint64(body[4:]), le.Uint32(body[12:]) // ParseRequest capped count to the msize
	qid, _, ok := d.sess.openFid(fid, unix.O_RDONLY)
	if !ok || off > 1<<63-1 {
		return false
	}
	iovs, room, err := iov.Append(nil, d.mem, p.writable)
	if err != nil || room < rreadHeader {
		return false // the queue checked the buffers; a short one the server truncates
	}
	iovs = iov.Limit(iov.Advance(iovs, rreadHeader), int(min(count, uint32(room-rreadHeader))))
	fd, release, ok := d.share.Reader(qid)
	if !ok {
		return false
	}
	n, err := iov.TransferAt(unix.Preadv, fd, iovs, int64(off))
	release()
	p.direct = n
	d.answerDirect(p, msgRread, n, err)
	return true
}

// writeDirect answers Twrite p, whose validated message is msg, with the
// data written by the file's own open flags (O_APPEND appends, O_DSYNC
// syncs). It reports false, having done nothing, when the server must
// answer instead.
func (d *Device) writeDirect(p *pending, msg []byte) bool {
	le := binary.LittleEndian
	body := msg[HeaderSize:]
	fid, off := le.Uint32(body), le.Uint64(body[4:])
	data := msg[twriteHeader:] // ParseRequest checked count against the length
	qid, flags, ok := d.sess.openFid(fid, unix.O_WRONLY)
	if !ok || off > 1<<63-1 {
		return false
	}
	fd, release, ok := d.share.Writer(qid, int(flags))
	if !ok {
		return false
	}
	n, err := iov.TransferAt(unix.Pwritev, fd, [][]byte{data}, int64(off))
	release()
	if n > 0 {
		err = nil // a short write, as pwrite reports one
	}
	d.answerDirect(p, msgRwrite, n, err)
	return true
}

// answerDirect answers p with R-message typ carrying count n, or with
// err's Rlerror.
func (d *Device) answerDirect(p *pending, typ uint8, n int, err error) {
	le := binary.LittleEndian
	resp := make([]byte, HeaderSize+4)
	if err != nil {
		errno, ok := errors.AsType[unix.Errno](err)
		if !ok {
			errno = unix.EIO
		}
		resp, p.direct = lerror(p.tag, uint32(errno)), 0
	} else {
		le.PutUint32(resp, uint32(len(resp)+p.direct))
		resp[4] = typ
		le.PutUint16(resp[5:], p.tag)
		le.PutUint32(resp[HeaderSize:], uint32(n))
	}
	d.sess.answer(p, nil, resp)
}
