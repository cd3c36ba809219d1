package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
)

// The vsock phase drives gvmm's virtio-vsock function by hand (this
// guest loads no vsock driver; the phase unbinds it from virtio-pci): packets no driver would send, credit it
// does not have, floods of requests, malformed chains and rx buffers.
// It reports "vs=CASE:OUTCOME"; the test on the host knows what each
// must be. The host listens on vsockListenPort (PATH_7000) and never
// accepts; nothing listens on any other host port.

// The vsock function: virtio 1.0 device 0x1040 + 19.
const vsockPCIDevice = "0x1053"

const (
	vsockListenPort = 7000
	vsQueueSize     = 16
	vsHeaderSize    = 44
	vsHostCID       = 2
	vsTypeStream    = 1
	vsGuestAlloc    = 256 << 10
)

// vsock operations.
const (
	vsOpRequest  = 1
	vsOpResponse = 2
	vsOpRST      = 3
	vsOpRW       = 5
)

// Pages of the vsock driver's memory: rings of the rx, tx and event
// queues, one page per rx buffer, tx headers, one tx payload page.
const (
	vsPgRings  = 0 // 3 pages per queue: descriptors, available, used
	vsPgRx     = vsPgRings + 9
	vsPgHeader = vsPgRx + vsQueueSize
	vsPgData   = vsPgHeader + 1
	vsDMAPages = vsPgData + 1
)

// vsHdr is struct virtio_vsock_hdr.
type vsHdr struct {
	srcCID, dstCID   uint64
	srcPort, dstPort uint32
	len              uint32
	typ, op          uint16
	flags            uint32
	bufAlloc, fwdCnt uint32
}

func (h vsHdr) put(b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], h.srcCID)
	le.PutUint64(b[8:], h.dstCID)
	le.PutUint32(b[16:], h.srcPort)
	le.PutUint32(b[20:], h.dstPort)
	le.PutUint32(b[24:], h.len)
	le.PutUint16(b[28:], h.typ)
	le.PutUint16(b[30:], h.op)
	le.PutUint32(b[32:], h.flags)
	le.PutUint32(b[36:], h.bufAlloc)
	le.PutUint32(b[40:], h.fwdCnt)
}

func parseVsHdr(b []byte) vsHdr {
	le := binary.LittleEndian
	return vsHdr{le.Uint64(b[0:]), le.Uint64(b[8:]), le.Uint32(b[16:]), le.Uint32(b[20:]), le.Uint32(b[24:]),
		le.Uint16(b[28:]), le.Uint16(b[30:]), le.Uint32(b[32:]), le.Uint32(b[36:]), le.Uint32(b[40:])}
}

// vsq is one queue of the hand driver.
type vsq struct {
	b     *bar
	mem   *dma
	idx   int
	page  int // first of its three ring pages
	avail uint16
	used  uint16
}

func (q *vsq) desc() []byte { return q.mem.page(q.page) }

func (q *vsq) post(heads ...uint16) {
	ring := q.mem.page(q.page + 1)
	for _, h := range heads {
		binary.LittleEndian.PutUint16(ring[4+2*int(q.avail%vsQueueSize):], h)
		q.avail++
	}
	binary.LittleEndian.PutUint16(ring[2:], q.avail)
	q.b.w.write(q.b.common+ccQueueSelect, 2, uint64(q.idx))
	off := q.b.w.read(q.b.common+ccQueueNotifyOff, 2)
	q.b.w.write(q.b.notify+off*q.b.notifyMultiplier, 2, uint64(q.idx))
}

// next returns the next used element, if the device published one.
func (q *vsq) next() (id, n uint32, ok bool) {
	ring := q.mem.page(q.page + 2)
	if binary.LittleEndian.Uint16(ring[2:]) == q.used {
		return 0, 0, false
	}
	e := ring[4+8*int(q.used%vsQueueSize):]
	q.used++
	return binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:]), true
}

// vsdev is the hand-driven device.
type vsdev struct {
	b          *bar
	mem        *dma
	rx, tx, ev *vsq
	cid        uint64
	txSlot     int
	txUsed     int
}

// setupVsock resets the function and sets it up as a driver would, all
// three queues of vsQueueSize entries, without interrupts. It returns
// "needs-reset" if the device refused.
func setupVsock(b *bar, mem *dma) (*vsdev, string, error) {
	if err := b.reset(); err != nil {
		return nil, "", err
	}
	clear(mem.b)
	w, c := b.w, b.common
	status := uint64(statusAcknowledge | statusDriver)
	w.write(c+ccDeviceStatus, 1, status)
	w.write(c+ccDriverFeatureSelect, 4, 0)
	w.write(c+ccDriverFeature, 4, 0)
	w.write(c+ccDriverFeatureSelect, 4, 1)
	w.write(c+ccDriverFeature, 4, featVersion1>>32)
	status |= statusFeaturesOK
	w.write(c+ccDeviceStatus, 1, status)
	if b.status()&statusFeaturesOK == 0 {
		return nil, "refused", nil
	}
	d := &vsdev{b: b, mem: mem}
	for i, q := range []**vsq{&d.rx, &d.tx, &d.ev} {
		*q = &vsq{b: b, mem: mem, idx: i, page: vsPgRings + 3*i}
		w.write(c+ccQueueSelect, 2, uint64(i))
		w.write(c+ccQueueSize, 2, vsQueueSize)
		w.write(c+ccQueueMSIXVector, 2, noVector)
		for j := range 3 {
			a := mem.addr((*q).page+j, 0)
			w.write(c+ccQueueDesc+8*uint64(j), 4, a&0xffffffff)
			w.write(c+ccQueueDesc+8*uint64(j)+4, 4, a>>32)
		}
		w.write(c+ccQueueEnable, 2, 1)
	}
	w.write(c+ccDeviceStatus, 1, status|statusDriverOK)
	if b.status()&statusNeedsReset != 0 {
		return nil, "needs-reset", nil
	}
	d.cid = w.read(b.device, 8)
	return d, "", nil
}

// postRx gives the device rx buffers [first, first+n), a page each of
// size bytes.
func (d *vsdev) postRx(first, n int, size uint32) {
	heads := make([]uint16, n)
	for i := range n {
		putDesc(d.rx.desc(), first+i, d.mem.addr(vsPgRx+first+i, 0), size, descWrite, 0)
		heads[i] = uint16(first + i)
	}
	d.rx.post(heads...)
}

func (d *vsdev) hdr(op uint16, srcPort, dstPort uint32) vsHdr {
	return vsHdr{srcCID: d.cid, dstCID: vsHostCID, srcPort: srcPort, dstPort: dstPort, typ: vsTypeStream, op: op, bufAlloc: vsGuestAlloc}
}

// send posts a packet in the next of the tx queue's eight two-descriptor
// slots; a payload comes from the data page. raw, if set, replaces the
// chain: it gets the slot's descriptors.
func (d *vsdev) send(h vsHdr, payload uint32, raw func(desc []byte, first int, hdr seg)) {
	slot := d.txSlot % (vsQueueSize / 2)
	d.txSlot++
	hb := d.mem.page(vsPgHeader)[64*slot:]
	h.put(hb)
	hs := seg{addr: d.mem.addr(vsPgHeader, 64*slot), n: vsHeaderSize}
	switch {
	case raw != nil:
		raw(d.tx.desc(), 2*slot, hs)
	case payload > 0:
		chain(d.tx.desc(), 2*slot, hs, seg{addr: d.mem.addr(vsPgData, 0), n: payload})
	default:
		chain(d.tx.desc(), 2*slot, hs)
	}
	d.tx.post(uint16(2 * slot))
}

// awaitTx waits until the device completed n more tx chains, at most
// limit; it returns how many it completed.
func (d *vsdev) awaitTx(n int, limit time.Duration) int {
	done := 0
	for deadline := time.Now().Add(limit); done < n && time.Now().Before(deadline); {
		if _, _, ok := d.tx.next(); ok {
			done++
			continue
		}
		time.Sleep(time.Millisecond)
	}
	d.txUsed += done
	return done
}

// recv waits up to limit for an rx packet, gives its buffer back and
// returns its header.
func (d *vsdev) recv(limit time.Duration) (vsHdr, bool) {
	for deadline := time.Now().Add(limit); ; time.Sleep(time.Millisecond) {
		if id, n, ok := d.rx.next(); ok {
			var h vsHdr
			if n >= vsHeaderSize && id < vsQueueSize {
				h = parseVsHdr(d.mem.page(vsPgRx + int(id)))
			}
			d.postRx(int(id%vsQueueSize), 1, pageSize)
			return h, true
		}
		if time.Now().After(deadline) || d.b.status()&statusNeedsReset != 0 {
			return vsHdr{}, false
		}
	}
}

// drain receives until quiet for limit and counts packets by op.
func (d *vsdev) drain(limit time.Duration, ops map[uint16]int) {
	for {
		h, ok := d.recv(limit)
		if !ok {
			return
		}
		ops[h.op]++
	}
}

// vsCase is one attack on a freshly set up device.
type vsCase struct {
	name string
	run  func(d *vsdev, h *hostile) string
}

// attackVsock runs every case on a fresh setup and reports its outcome.
func (h *hostile) attackVsock() (int, error) {
	dir := findFunction("0x1af4", vsockPCIDevice)
	if dir == "" {
		return 0, errors.New("no vsock function")
	}
	cl, err := claim(dir, vsDMAPages)
	if err != nil {
		return 0, err
	}
	defer cl.release()
	b, mem := cl.bar, cl.mem
	n := 0
	for _, c := range vsockCases {
		d, out, err := setupVsock(b, mem)
		if err != nil {
			return n, fmt.Errorf("%s: %w", c.name, err)
		}
		if d != nil {
			out = c.run(d, h)
			n += d.txSlot
		}
		guest.Report("vs", c.name+":"+out)
	}
	return n, b.reset()
}

const vsQuiet = 2 * time.Second

var vsockCases = []vsCase{
	{"closed-port", func(d *vsdev, _ *hostile) string {
		d.postRx(0, vsQueueSize, pageSize)
		d.send(d.hdr(vsOpRequest, 1000, 1), 0, nil)
		r, ok := d.recv(awaitLimit)
		if !ok {
			return "no-answer"
		}
		return fmt.Sprintf("op=%d:ports=%d>%d", r.op, r.srcPort, r.dstPort)
	}},
	// Requests to closed ports with no rx buffer for the answers: the
	// device stops taking them once what it owes is full (connections
	// whose host side failed, then its bounded backlog of RSTs), and
	// answers all once buffers come.
	{"flood-closed", func(d *vsdev, _ *hostile) string {
		sent, stalledAt := 0, 0
		for round := 0; stalledAt == 0 && round < 100; round++ {
			for i := range vsQueueSize / 2 {
				d.send(d.hdr(vsOpRequest, uint32(2000+sent+i), 1), 0, nil)
			}
			sent += vsQueueSize / 2
			if d.awaitTx(vsQueueSize/2, vsQuiet) < vsQueueSize/2 {
				stalledAt = d.txUsed
			}
		}
		d.postRx(0, vsQueueSize, pageSize)
		ops := map[uint16]int{}
		d.drain(vsQuiet, ops)
		d.awaitTx(sent-d.txUsed, awaitLimit)
		return fmt.Sprintf("stalled=%d:sent=%d:rst=%d:tx=%d", stalledAt, sent, ops[vsOpRST], d.txUsed)
	}},
	// A connection to the host whose peer never reads, and a driver
	// that keeps sending past the credit the device advertised.
	{"lying-credit", func(d *vsdev, _ *hostile) string {
		d.postRx(0, vsQueueSize, pageSize)
		d.send(d.hdr(vsOpRequest, 3000, vsockListenPort), 0, nil)
		if r, ok := d.recv(awaitLimit); !ok || r.op != vsOpResponse {
			return fmt.Sprintf("not-connected:op=%d", r.op)
		}
		rw := d.hdr(vsOpRW, 3000, vsockListenPort)
		rw.len = pageSize
		for sent := 0; sent < 1024; sent++ {
			d.send(rw, pageSize, nil)
			if d.awaitTx(1, awaitLimit) != 1 {
				return fmt.Sprintf("tx-stuck:sent=%d", sent)
			}
			for {
				r, ok := d.recv(0)
				if !ok {
					break
				}
				if r.op == vsOpRST {
					// At least the advertised 256 KiB went through first.
					return fmt.Sprintf("rst:past-256k=%t", sent*pageSize >= 256<<10)
				}
			}
		}
		return "no-rst"
	}},
	// More requests than the device takes connections: the first 256
	// are answered RESPONSE, the rest RST.
	{"conn-flood", func(d *vsdev, _ *hostile) string {
		d.postRx(0, vsQueueSize, pageSize)
		ops := map[uint16]int{}
		const total = 300
		for sent := 0; sent < total; {
			n := min(vsQueueSize/2, total-sent)
			for i := range n {
				d.send(d.hdr(vsOpRequest, uint32(4000+sent+i), vsockListenPort), 0, nil)
			}
			sent += n
			d.awaitTx(n, awaitLimit)
			for {
				r, ok := d.recv(0)
				if !ok {
					break
				}
				ops[r.op]++
			}
		}
		d.drain(vsQuiet, ops)
		return fmt.Sprintf("response=%d:rst=%d", ops[vsOpResponse], ops[vsOpRST])
	}},
	// Malformed packets; the answers, in order, end with the marker's.
	{"malformed", func(d *vsdev, _ *hostile) string {
		d.postRx(0, vsQueueSize, pageSize)
		short := func(desc []byte, first int, h seg) { chain(desc, first, seg{addr: h.addr, n: 10}) }
		writable := func(desc []byte, first int, h seg) {
			chain(desc, first, h, seg{addr: d.mem.addr(vsPgData, 0), n: 64, write: true})
		}
		lenPastChain := d.hdr(vsOpRW, 5000, 1)
		lenPastChain.len = 100
		unknownOp := d.hdr(99, 5001, 1)
		spoofed := d.hdr(vsOpRequest, 5002, 1)
		spoofed.srcCID = 99
		d.send(d.hdr(vsOpRequest, 5003, 1), 0, short)
		d.send(d.hdr(vsOpRequest, 5004, 1), 0, writable)
		d.send(lenPastChain, 0, nil)
		d.send(unknownOp, 0, nil)
		d.send(spoofed, 0, nil)
		d.send(d.hdr(vsOpRequest, 5005, 1), 0, nil) // the marker
		d.awaitTx(6, awaitLimit)
		var got []string
		for {
			r, ok := d.recv(vsQuiet)
			if !ok {
				break
			}
			got = append(got, fmt.Sprintf("%d@%d", r.op, r.dstPort))
		}
		return strings.Join(got, ",")
	}},
	{"desc-beyond-ram", func(d *vsdev, h *hostile) string {
		d.postRx(0, vsQueueSize, pageSize)
		d.send(vsHdr{}, 0, func(desc []byte, first int, _ seg) {
			chain(desc, first, seg{addr: h.ramEnd + 1<<30, n: vsHeaderSize})
		})
		return awaitNeedsReset(d.b)
	}},
	{"rx-too-small", func(d *vsdev, _ *hostile) string {
		d.postRx(0, 1, 8)
		d.send(d.hdr(vsOpRequest, 6000, 1), 0, nil)
		return awaitNeedsReset(d.b)
	}},
	{"works-after", func(d *vsdev, _ *hostile) string {
		d.postRx(0, vsQueueSize, pageSize)
		d.send(d.hdr(vsOpRequest, 1000, 1), 0, nil)
		r, ok := d.recv(awaitLimit)
		if !ok {
			return "no-answer"
		}
		return fmt.Sprintf("op=%d", r.op)
	}},
}

func awaitNeedsReset(b *bar) string {
	for deadline := time.Now().Add(awaitLimit); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if b.status()&statusNeedsReset != 0 {
			return "needs-reset"
		}
	}
	return fmt.Sprintf("status=%#x", b.status())
}
