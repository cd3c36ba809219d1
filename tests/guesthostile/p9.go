package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/virtio/p9/p9test"
)

// 9P2000.L message types the p9 phase sends and reads.
const (
	p9Rlerror   = 7
	p9Tgetattr  = 24
	p9Tversion  = 100
	p9Tattach   = 104
	p9Tflush    = 108
	p9Twalk     = 110
	p9Rwalk     = 111
	p9Tlopen    = 12
	p9Tread     = 116
	p9Twrite    = 118
	p9noTag     = 0xffff
	p9noFid     = 0xffffffff
	p9Header    = 7
	p9FloodReqs = 60 // two descriptors each, within the queue
)

// p9ask posts msg as one chain, the answer room in the first data page, and
// describes the answer: "type=T:errno=E" for an Rlerror, "type=T" else,
// "len=0" for an empty one, or how the device refused.
func p9ask(q *vq, msg []byte, room uint32) (string, []byte) {
	copy(q.mem.page(pgHeader), msg)
	out := q.mem.page(pgData)
	clear(out)
	head := chain(q.mem.page(pgDesc), 0, seg{q.mem.addr(pgHeader, 0), uint32(len(msg)), false},
		seg{q.mem.addr(pgData, 0), room, true})
	q.post(head)
	if res := q.await(1, awaitLimit); res != "used" {
		return res, nil
	}
	n := q.usedLen(q.used - 1)
	if n == 0 {
		return "len=0", nil
	}
	if n < p9Header || n > room {
		return fmt.Sprintf("len=%d", n), nil
	}
	resp := out[:n]
	switch {
	case resp[4] == p9Rlerror && n >= p9Header+4:
		return fmt.Sprintf("type=%d:errno=%s", resp[4], unix.ErrnoName(unix.Errno(binary.LittleEndian.Uint32(resp[p9Header:])))), resp
	case resp[4] == p9Rwalk && n >= p9Header+2:
		return fmt.Sprintf("type=%d:nwqid=%d", resp[4], binary.LittleEndian.Uint16(resp[p9Header:])), resp
	}
	return fmt.Sprintf("type=%d", resp[4]), resp
}

// attackShare unbinds the share's function, drives its queue by hand with
// hostile 9P messages and reports "p9=CASE:OUTCOME", then gives it back
// to virtio-pci and mounts it: "p9mount=TEXT" is the file f as read.
func (h *hostile) attackShare() (int, error) {
	dir := findFunction("0x1af4", "0x1049")
	if dir == "" {
		return 0, errors.New("no virtio-9p function")
	}
	fn, err := openFunction(dir)
	if err != nil {
		return 0, err
	}
	defer fn.close()
	if err := unbind(fn.dir); err != nil {
		return 0, err
	}
	b, err := mapBAR(fn)
	if err != nil {
		return 0, err
	}
	mem, err := newDMA(dmaPages)
	if err != nil {
		b.unmap()
		return 0, err
	}
	q, out, err := setup(b, mem, queueSetup{})
	if err != nil || q == nil {
		b.unmap()
		return 0, fmt.Errorf("share queue setup: %s %v", out, err)
	}
	n := 0
	ask := func(name string, msg []byte) []byte {
		res, resp := p9ask(q, msg, pageSize)
		guest.Report("p9", name+":"+res)
		n++
		return resp
	}
	if resp := ask("version", p9test.Msg(p9Tversion, p9noTag, uint32(1<<30), "9P2000.L")); len(resp) >= p9Header+4 {
		guest.Report("p9msize", binary.LittleEndian.Uint32(resp[p9Header:]))
	}
	ask("attach", p9test.Msg(p9Tattach, 1, uint32(1), uint32(p9noFid), "root", "", uint32(0)))
	ask("walk-dotdot", p9test.Msg(p9Twalk, 2, uint32(1), uint32(2), uint16(1), ".."))
	ask("walk-slash", p9test.Msg(p9Twalk, 3, uint32(1), uint32(2), uint16(1), "../../etc"))
	ask("walk-through-symlink", p9test.Msg(p9Twalk, 4, uint32(1), uint32(2), uint16(2), "out", "etc"))
	ask("walk-symlink", p9test.Msg(p9Twalk, 5, uint32(1), uint32(3), uint16(1), "out"))
	ask("open-symlink", p9test.Msg(p9Tlopen, 6, uint32(3), uint32(0)))
	ask("walk-device", p9test.Msg(p9Twalk, 7, uint32(1), uint32(4), uint16(1), "null"))
	ask("open-device", p9test.Msg(p9Tlopen, 8, uint32(4), uint32(2)))
	ask("flush-self", p9test.Msg(p9Tflush, 9, uint16(9)))
	ask("size-lies", append(p9test.Msg(p9Tgetattr, 10, uint32(1), uint64(0x3fff)), 0, 0, 0))
	ask("unknown-type", p9test.Msg(250, 11, uint32(1)))
	ask("notag", p9test.Msg(p9Tgetattr, p9noTag, uint32(1), uint64(0x3fff)))
	ask("walk-file", p9test.Msg(p9Twalk, 12, uint32(1), uint32(5), uint16(1), "f"))
	ask("open-file", p9test.Msg(p9Tlopen, 13, uint32(5), uint32(0)))
	if resp := ask("huge-read", p9test.Msg(p9Tread, 14, uint32(5), uint64(0), uint32(0xffffffff))); len(resp) >= p9Header+4 {
		guest.Report("p9read", string(resp[p9Header+4:]))
	}
	// The device moves the data of an open file's reads and writes
	// itself: past what int64 offsets reach, into less room than the
	// answer's header, and through a fid not open for it, it leaves the
	// request to the server.
	ask("read-past-int64", p9test.Msg(p9Tread, 17, uint32(5), uint64(1)<<63, uint32(16)))
	ask("write-read-only-fid", p9test.Msg(p9Twrite, 19, uint32(5), uint64(0), uint32(4), []byte("evil")))
	res, _ := p9ask(q, p9test.Msg(p9Tread, 18, uint32(5), uint64(0), uint32(16)), 3)
	guest.Report("p9", "read-tiny-room:"+res)
	n++
	res, _ = p9ask(q, p9test.Msg(p9Tgetattr, 15, uint32(1), uint64(0x3fff)), 3)
	guest.Report("p9", "tiny-room:"+res)
	n++
	// No room at all for the answer.
	copy(q.mem.page(pgHeader), p9test.Msg(p9Tgetattr, 16, uint32(1), uint64(0x3fff)))
	q.post(chain(q.mem.page(pgDesc), 0, seg{q.mem.addr(pgHeader, 0), 19, false}))
	guest.Report("p9", "no-room:"+q.await(1, awaitLimit)+fmt.Sprintf(":len=%d", q.usedLen(q.used-1)))
	n++
	guest.Report("p9", "flood:"+p9flood(q))
	n += p9FloodReqs
	err = b.reset()
	b.unmap()
	if err != nil {
		return n, err
	}
	if err := bind(fn.dir); err != nil {
		return n, fmt.Errorf("binding %s: %w", fn.name(), err)
	}
	return n, p9mount()
}

// p9flood posts p9FloodReqs Tgetattr at once, each with its own tag,
// more than the device works on at a time: "used=N" once all came back.
func p9flood(q *vq) string {
	const slot = 64
	var heads []uint16
	for i := range p9FloodReqs {
		m := p9test.Msg(p9Tgetattr, uint16(100+i), uint32(1), uint64(0x3fff))
		copy(q.mem.page(pgHeader)[slot*i:], m)
		heads = append(heads, chain(q.mem.page(pgDesc), 2*i,
			seg{q.mem.addr(pgHeader, slot*i), uint32(len(m)), false},
			// Pages are not contiguous in physical memory: 16 slots a page.
			seg{q.mem.addr(pgData+i/16, 256*(i%16)), 256, true}))
	}
	q.post(heads...)
	res := q.await(p9FloodReqs, awaitLimit)
	if res != "used" {
		return res
	}
	return fmt.Sprintf("used=%d", p9FloodReqs)
}

// p9mount mounts the share with the kernel's driver after the attack and
// reads f.
func p9mount() error {
	const mnt = "/mnt/share"
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	var err error
	for deadline := time.Now().Add(diskWait); ; time.Sleep(50 * time.Millisecond) {
		if err = unix.Mount("hostile", mnt, "9p", 0, "trans=virtio,version=9p2000.L"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("mounting the share after the attack: %w", err)
	}
	defer unix.Unmount(mnt, 0)
	data, err := os.ReadFile(filepath.Join(mnt, "f"))
	if err != nil {
		return err
	}
	guest.Report("p9mount", string(data))
	return nil
}
