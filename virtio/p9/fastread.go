package p9

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/virtio/internal/iov"
)

// msgRread is Tread's answer.
const msgRread = msgTread + 1

// readDirect answers Tread p, whose validated message is msg, from the
// file straight into the guest's buffers, as QEMU does: through the 9P
// server a read's data would be copied three times more (into the
// server's buffer, its message, and our session's). It reads on the
// queue's thread, where a goroutine per read cost 10 to 25 % of the
// throughput (Benchmark9p); a read stalled by a slow host file system
// so holds up the share's later requests, never a vCPU. It reports
// false, having done nothing, when the server must answer instead: an fid
// not open for reading a regular file, one opened with O_DIRECT, or
// answer buffers too small for the header.
func (d *Device) readDirect(p *pending, msg []byte) bool {
	le := binary.LittleEndian
	body := msg[HeaderSize:]
	fid, off, count := le.Uint32(body), le.Uint64(body[4:]), le.Uint32(body[12:]) // ParseRequest capped count to the msize
	s := d.sess
	s.mu.Lock()
	r := s.fids[fid]
	ok := r != nil && r.open && !r.dir && r.flags&unix.O_ACCMODE != unix.O_WRONLY && r.flags&unix.O_DIRECT == 0
	var qid uint64
	if ok {
		qid = r.qid
	}
	s.mu.Unlock()
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
	resp := make([]byte, rreadHeader)
	if err != nil {
		errno, ok := errors.AsType[unix.Errno](err)
		if !ok {
			errno = unix.EIO
		}
		resp, n = lerror(p.tag, uint32(errno)), 0
	} else {
		le.PutUint32(resp, uint32(rreadHeader+n))
		resp[4] = msgRread
		le.PutUint16(resp[5:], p.tag)
		le.PutUint32(resp[HeaderSize:], uint32(n))
	}
	p.direct = n
	s.answer(p, nil, resp)
	return true
}
