package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/guestblk/pattern"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
)

// dma is locked memory of this process whose guest physical addresses,
// read from /proc/self/pagemap, a device can be given.
type dma struct {
	b    []byte
	phys []uint64 // per page
}

func newDMA(pages int) (*dma, error) {
	b, err := unix.Mmap(-1, 0, pages*pageSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_ANON|unix.MAP_PRIVATE|unix.MAP_POPULATE|unix.MAP_LOCKED)
	if err != nil {
		return nil, err
	}
	if err := unix.Mlock(b); err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d := &dma{b: b}
	base := int64(sliceAddr(b) / pageSize)
	for i := 0; i < pages; i++ {
		var e [8]byte
		if _, err := f.ReadAt(e[:], (base+int64(i))*8); err != nil {
			return nil, fmt.Errorf("pagemap: %w", err)
		}
		v := binary.LittleEndian.Uint64(e[:])
		const present, pfnMask = 1 << 63, 1<<55 - 1
		if v&present == 0 || v&pfnMask == 0 {
			return nil, fmt.Errorf("pagemap: page %d not present or PFN hidden (%#x)", i, v)
		}
		d.phys = append(d.phys, (v&pfnMask)*pageSize)
	}
	return d, nil
}

func (d *dma) page(i int) []byte      { return d.b[i*pageSize : (i+1)*pageSize] }
func (d *dma) addr(i, off int) uint64 { return d.phys[i] + uint64(off) }

// Pages of the driver's memory.
const (
	pgDesc = iota
	pgAvail
	pgUsed
	pgIndirect
	pgIndirect2
	pgHeader
	pgStatus
	pgData
	dmaPages = pgData + 4
)

// Descriptor flags.
const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4
)

// Feature bits the hand driver negotiates.
const (
	featIndirect = 1 << 28
	featVersion1 = 1 << 32
)

// virtio-blk request types and the status the device writes.
const (
	blkIn          = 0
	blkGetID       = 8
	blkWriteZeroes = 13
	statusNone     = 0xee // what the driver puts in the status byte beforehand
	noVector       = 0xffff
)

// vq is the driver side of queue 0 of a virtio-blk function driven by
// hand, with no interrupts: the driver polls the used ring.
type vq struct {
	b        *bar
	mem      *dma
	size     uint16
	avail    uint16 // the driver's avail.idx
	used     uint16 // used.idx last consumed
	capacity uint64 // sectors
}

// queueSetup is what a case changes in the driver's initialization.
type queueSetup struct {
	features     uint64 // default VERSION_1 | INDIRECT_DESC
	size         uint16 // default the device's maximum
	desc, driver uint64 // ring addresses; default the dma pages
	device       uint64
	select_      uint16 // queue_select; default 0
	skipFeatures bool   // never set FEATURES_OK
	enableEarly  bool   // enable the queue before FEATURES_OK
}

// setup resets the device and initializes it as a driver would (spec
// 3.1.1), with the case's changes. It returns the queue, or an outcome if
// the device refused: "refused" (FEATURES_OK not accepted) or
// "needs-reset".
func setup(b *bar, mem *dma, s queueSetup) (*vq, string, error) {
	if err := b.reset(); err != nil {
		return nil, "", err
	}
	clear(mem.b)
	w, c := b.w, b.common
	status := uint8(statusAcknowledge)
	w.write(c+ccDeviceStatus, 1, uint64(status))
	status |= statusDriver
	w.write(c+ccDeviceStatus, 1, uint64(status))
	if s.features == 0 {
		s.features = featVersion1 | featIndirect
	}
	for sel := uint64(0); sel < 2; sel++ {
		w.write(c+ccDriverFeatureSelect, 4, sel)
		w.write(c+ccDriverFeature, 4, s.features>>(32*sel)&0xffffffff)
	}
	q := &vq{b: b, mem: mem}
	enable := func() {
		w.write(c+ccQueueSelect, 2, uint64(s.select_))
		max := uint16(w.read(c+ccQueueSize, 2))
		q.size = s.size
		if q.size == 0 {
			q.size = max
		}
		w.write(c+ccQueueSize, 2, uint64(q.size))
		w.write(c+ccQueueMSIXVector, 2, noVector)
		for i, a := range []uint64{s.desc, s.driver, s.device} {
			if a == 0 {
				a = mem.addr(pgDesc+i, 0)
			}
			w.write(c+ccQueueDesc+8*uint64(i), 4, a&0xffffffff)
			w.write(c+ccQueueDesc+8*uint64(i)+4, 4, a>>32)
		}
		w.write(c+ccQueueEnable, 2, 1)
	}
	if s.enableEarly {
		enable()
	}
	if !s.skipFeatures {
		status |= statusFeaturesOK
		w.write(c+ccDeviceStatus, 1, uint64(status))
		if b.status()&statusFeaturesOK == 0 {
			return nil, "refused", nil
		}
	}
	if !s.enableEarly {
		enable()
	}
	status |= statusDriverOK
	w.write(c+ccDeviceStatus, 1, uint64(status))
	if st := b.status(); st&statusNeedsReset != 0 {
		return nil, "needs-reset", nil
	}
	q.capacity = w.read(b.device, 8)
	return q, "", nil
}

// desc writes descriptor i of table (the queue's own by default).
func putDesc(table []byte, i int, addr uint64, n uint32, flags, next uint16) {
	d := table[16*i:]
	binary.LittleEndian.PutUint64(d[0:], addr)
	binary.LittleEndian.PutUint32(d[8:], n)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

// seg is one buffer of a chain.
type seg struct {
	addr  uint64
	n     uint32
	write bool
}

// chain writes segs as descriptors first, first+1, ... of table, linked
// with NEXT, and returns first.
func chain(table []byte, first int, segs ...seg) uint16 {
	for i, s := range segs {
		var flags uint16
		if s.write {
			flags |= descWrite
		}
		if i < len(segs)-1 {
			flags |= descNext
		}
		putDesc(table, first+i, s.addr, s.n, flags, uint16(first+i+1))
	}
	return uint16(first)
}

// header writes a request header into slot i of the header page and
// returns its segment.
func (q *vq) header(i int, typ uint32, sector uint64) seg {
	h := q.mem.page(pgHeader)[16*i:]
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint32(h[4:], 0)
	binary.LittleEndian.PutUint64(h[8:], sector)
	return seg{addr: q.mem.addr(pgHeader, 16*i), n: 16}
}

// status returns the segment of status byte i, preset to statusNone.
func (q *vq) status(i int) seg {
	q.mem.page(pgStatus)[16*i] = statusNone
	return seg{addr: q.mem.addr(pgStatus, 16*i), n: 1, write: true}
}

func (q *vq) statusByte(i int) byte { return q.mem.page(pgStatus)[16*i] }

// post makes heads available and notifies the device.
func (q *vq) post(heads ...uint16) {
	ring := q.mem.page(pgAvail)
	for _, h := range heads {
		binary.LittleEndian.PutUint16(ring[4+2*int(q.avail%q.size):], h)
		q.avail++
	}
	q.publish(q.avail)
}

// publish stores avail.idx, which may lie, and notifies.
func (q *vq) publish(idx uint16) {
	binary.LittleEndian.PutUint16(q.mem.page(pgAvail)[2:], idx)
	q.notify(2)
}

// notify writes the queue's notification address at a width: 2 is what
// the VMM catches with an ioeventfd, others exit to it.
func (q *vq) notify(width int) {
	off := q.b.w.read(q.b.common+ccQueueNotifyOff, 2)
	q.b.w.write(q.b.notify+off*q.b.notifyMultiplier, width, 0)
}

func (q *vq) usedIdx() uint16 { return binary.LittleEndian.Uint16(q.mem.page(pgUsed)[2:]) }

// usedLen returns the length the device wrote for used element i.
func (q *vq) usedLen(i uint16) uint32 {
	return binary.LittleEndian.Uint32(q.mem.page(pgUsed)[4+8*int(i%q.size)+4:])
}

// await waits until the device used n more chains ("used") or wants a
// reset ("needs-reset"), at most limit ("timeout").
func (q *vq) await(n uint16, limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		if q.usedIdx()-q.used >= n {
			q.used += n
			return "used"
		}
		if q.b.status()&statusNeedsReset != 0 {
			return "needs-reset"
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("timeout:used=%d", q.usedIdx()-q.used)
		}
		time.Sleep(time.Millisecond)
	}
}

const awaitLimit = 5 * time.Second

// read posts a read of one sector and checks it against the pattern:
// "used:status=0:data=ok" when all is well.
func (q *vq) read(seed uint64, sector uint64) string {
	data := q.mem.page(pgData)[:512]
	clear(data)
	head := chain(q.mem.page(pgDesc), 0, q.header(0, blkIn, sector),
		seg{q.mem.addr(pgData, 0), 512, true}, q.status(0))
	q.post(head)
	out := q.await(1, awaitLimit)
	if out != "used" {
		return out
	}
	want := make([]byte, 512)
	pattern.Fill(want, seed, int64(sector)*512)
	ok := "ok"
	if !bytes.Equal(data, want) {
		ok = "mismatch"
	}
	return fmt.Sprintf("used:status=%d:data=%s", q.statusByte(0), ok)
}

// request posts one chain and reports "used:status=S:len=N" or how the
// device refused it.
func (q *vq) request(head uint16) string {
	q.post(head)
	out := q.await(1, awaitLimit)
	if out != "used" {
		return out
	}
	return fmt.Sprintf("used:status=%d:len=%d", q.statusByte(0), q.usedLen(q.used-1))
}

// qcase is one hostile thing to do to the queue.
type qcase struct {
	name  string
	setup queueSetup
	run   func(h *hostile, q *vq) string
}

// attackQueue unbinds the attacked disk, drives its queue by hand through
// every case and reports "vq=CASE:OUTCOME"; the test on the host knows
// what each outcome must be.
func (h *hostile) attackQueue() (int, error) {
	cl, err := claim(h.attackFn, dmaPages)
	if err != nil {
		return 0, err
	}
	defer cl.release()
	b, mem := cl.bar, cl.mem
	n := 0
	for _, c := range h.queueCases(b, mem) {
		q, out, err := setup(b, mem, c.setup)
		if err != nil {
			return n, fmt.Errorf("%s: %w", c.name, err)
		}
		switch {
		case q != nil && c.run == nil:
			out = fmt.Sprintf("ready:status=%#x", b.status()) // a setup the device should have refused
		case q != nil:
			out = c.run(h, q)
			n += int(q.avail)
		}
		guest.Report("vq", c.name+":"+out)
	}
	return n, b.reset()
}

func (h *hostile) queueCases(b *bar, mem *dma) []qcase {
	seed := h.a.seed(h.attack)
	data := func(q *vq) seg { return seg{q.mem.addr(pgData, 0), 512, true} }
	// A one-segment "chain" through a single descriptor pointing at addr.
	badBuffer := func(addr uint64, n uint32) func(*hostile, *vq) string {
		return func(_ *hostile, q *vq) string {
			return q.request(chain(q.mem.page(pgDesc), 0, q.header(0, blkIn, 0), seg{addr, n, true}, q.status(0)))
		}
	}
	// An indirect descriptor at head 0 with the given table address and
	// length; the table holds a good request unless fill changes it.
	indirect := func(flags uint16, fill func(q *vq, t []byte) (uint64, uint32)) func(*hostile, *vq) string {
		return func(_ *hostile, q *vq) string {
			t := q.mem.page(pgIndirect)
			chain(t, 0, q.header(0, blkIn, 0), data(q), q.status(0))
			addr, n := q.mem.addr(pgIndirect, 0), uint32(48)
			if fill != nil {
				addr, n = fill(q, t)
			}
			putDesc(q.mem.page(pgDesc), 0, addr, n, descIndirect|flags, 1)
			return q.request(0)
		}
	}
	// A write-zeroes request of n ranges of the given sectors from sector
	// 0, beyond what the device advertises (8 ranges of 128 MiB): it
	// must refuse it before zeroing anything.
	zeroes := func(n int, sectors uint32) func(*hostile, *vq) string {
		return func(_ *hostile, q *vq) string {
			p := q.mem.page(pgData)
			for i := range n {
				binary.LittleEndian.PutUint64(p[16*i:], 0)
				binary.LittleEndian.PutUint32(p[16*i+8:], sectors)
				binary.LittleEndian.PutUint32(p[16*i+12:], 0)
			}
			return q.request(chain(q.mem.page(pgDesc), 0, q.header(0, blkWriteZeroes, 0),
				seg{q.mem.addr(pgData, 0), uint32(16 * n), false}, q.status(0)))
		}
	}
	barAddr := uint64(lapicPage)
	if st, err := memoryBARs(h.attackFn); err != nil || len(st) == 0 {
		guest.Report("error", fmt.Sprintf("the attacked function's BAR: %v", err))
	} else {
		barAddr = st[0].start
	}
	return []qcase{
		// The hand driver works: without this the rest proves nothing.
		{name: "good-read", run: func(_ *hostile, q *vq) string { return q.read(seed, 1) }},
		{name: "good-read-indirect", run: indirect(0, nil)},
		{name: "get-id", run: func(_ *hostile, q *vq) string {
			return q.request(chain(q.mem.page(pgDesc), 0, q.header(0, blkGetID, 0), data(q), q.status(0)))
		}},

		// Bad requests in well-formed chains: the device answers them.
		{name: "past-end", run: func(_ *hostile, q *vq) string {
			return q.request(chain(q.mem.page(pgDesc), 0, q.header(0, blkIn, q.capacity), data(q), q.status(0)))
		}},
		{name: "sector-overflow", run: func(_ *hostile, q *vq) string {
			return q.request(chain(q.mem.page(pgDesc), 0, q.header(0, blkIn, 1<<63-1), data(q), q.status(0)))
		}},
		{name: "unknown-type", run: func(_ *hostile, q *vq) string {
			return q.request(chain(q.mem.page(pgDesc), 0, q.header(0, 0x77, 0), data(q), q.status(0)))
		}},
		{name: "odd-length", run: func(_ *hostile, q *vq) string {
			return q.request(chain(q.mem.page(pgDesc), 0, q.header(0, blkIn, 0),
				seg{q.mem.addr(pgData, 0), 100, true}, q.status(0)))
		}},
		{name: "wrong-direction", run: func(_ *hostile, q *vq) string {
			return q.request(chain(q.mem.page(pgDesc), 0, q.header(0, blkIn, 0),
				seg{q.mem.addr(pgData, 0), 512, false}, q.status(0)))
		}},
		{name: "short-header", run: func(_ *hostile, q *vq) string {
			h := q.header(0, blkIn, 0)
			h.n = 7
			return q.request(chain(q.mem.page(pgDesc), 0, h, data(q), q.status(0)))
		}},
		{name: "no-status", run: func(_ *hostile, q *vq) string {
			s := q.status(0)
			s.write = false
			return q.request(chain(q.mem.page(pgDesc), 0, q.header(0, blkIn, 0), s))
		}},

		{name: "zeroes-too-many-ranges", run: zeroes(9, 1)},
		{name: "zeroes-range-too-long", run: zeroes(1, 128<<20/512+1)},

		// Broken chains: the device must stop and ask for a reset.
		{name: "loop", run: func(_ *hostile, q *vq) string {
			t := q.mem.page(pgDesc)
			putDesc(t, 0, q.mem.addr(pgHeader, 0), 16, descNext, 1)
			putDesc(t, 1, q.mem.addr(pgData, 0), 512, descNext|descWrite, 0)
			return q.request(0)
		}},
		{name: "self-loop", run: func(_ *hostile, q *vq) string {
			putDesc(q.mem.page(pgDesc), 0, q.mem.addr(pgHeader, 0), 16, descNext, 0)
			return q.request(0)
		}},
		{name: "next-out-of-range", run: func(_ *hostile, q *vq) string {
			putDesc(q.mem.page(pgDesc), 0, q.mem.addr(pgHeader, 0), 16, descNext, q.size+5)
			return q.request(0)
		}},
		{name: "head-out-of-range", run: func(_ *hostile, q *vq) string { return q.request(0xffff) }},
		{name: "beyond-ram", run: badBuffer(h.ramEnd+1<<20, 512)},
		{name: "mmio-hole", run: badBuffer(lapicPage, 512)},
		{name: "own-bar", run: badBuffer(barAddr, 512)},
		{name: "wraps", run: badBuffer(1<<64-0x100, 0x200)},
		{name: "huge-length", run: badBuffer(mem.addr(pgData, 0), 0xffffffff)},
		{name: "readable-after-writable", run: func(_ *hostile, q *vq) string {
			return q.request(chain(q.mem.page(pgDesc), 0, q.header(0, blkIn, 0), data(q),
				seg{q.mem.addr(pgData, 512), 16, false}, q.status(0)))
		}},
		{name: "avail-jump", run: func(_ *hostile, q *vq) string {
			q.publish(q.avail + q.size + 1)
			return q.await(1, awaitLimit)
		}},
		{name: "indirect-len-zero", run: indirect(0, func(q *vq, _ []byte) (uint64, uint32) {
			return q.mem.addr(pgIndirect, 0), 0
		})},
		{name: "indirect-len-unaligned", run: indirect(0, func(q *vq, _ []byte) (uint64, uint32) {
			return q.mem.addr(pgIndirect, 0), 17
		})},
		{name: "indirect-too-long", run: indirect(0, func(q *vq, _ []byte) (uint64, uint32) {
			return q.mem.addr(pgIndirect, 0), 16 * (uint32(q.size) + 1)
		})},
		{name: "indirect-beyond-ram", run: indirect(0, func(*vq, []byte) (uint64, uint32) {
			return h.ramEnd - 16, 48
		})},
		{name: "indirect-with-next", run: indirect(descNext, nil)},
		{name: "indirect-nested", run: indirect(0, func(q *vq, t []byte) (uint64, uint32) {
			putDesc(t, 0, q.mem.addr(pgIndirect2, 0), 48, descIndirect, 0)
			return q.mem.addr(pgIndirect, 0), 48
		})},
		{name: "indirect-loop", run: indirect(0, func(q *vq, t []byte) (uint64, uint32) {
			putDesc(t, 0, q.mem.addr(pgHeader, 0), 16, descNext, 1)
			putDesc(t, 1, q.mem.addr(pgData, 0), 512, descNext|descWrite, 0)
			return q.mem.addr(pgIndirect, 0), 32
		})},
		{name: "indirect-not-negotiated", setup: queueSetup{features: featVersion1}, run: indirect(0, nil)},

		// Broken queue setups: refused when the queue is enabled.
		{name: "size-not-power-of-two", setup: queueSetup{size: 3}},
		{name: "size-too-large", setup: queueSetup{size: 1024}},
		{name: "desc-misaligned", setup: queueSetup{desc: mem.addr(pgDesc, 8)}},
		{name: "ring-beyond-ram", setup: queueSetup{desc: h.ramEnd - 2048}},
		{name: "ring-in-mmio-hole", setup: queueSetup{device: holeStart}},
		{name: "ring-wraps", setup: queueSetup{driver: 1<<64 - 0x100}},
		{name: "enable-before-features-ok", setup: queueSetup{enableEarly: true}},
		{name: "driver-ok-without-features-ok", setup: queueSetup{skipFeatures: true}},
		{name: "features-not-offered", setup: queueSetup{features: 1<<64 - 1}},
		{name: "no-version-1", setup: queueSetup{features: featIndirect}},
		{name: "queue-select-out-of-range", setup: queueSetup{select_: 9},
			run: func(_ *hostile, q *vq) string { return fmt.Sprintf("ready:status=%#x", q.b.status()) }},
		{name: "clear-status-bits", run: func(_ *hostile, q *vq) string {
			q.b.w.write(q.b.common+ccDeviceStatus, 1, statusAcknowledge)
			return fmt.Sprintf("status=%#x:%s", q.b.status(), q.read(seed, 2))
		}},

		// Volume: notifications, resets in flight, floods of bad requests
		// and broken chains. Each must leave the device usable.
		{name: "notify-storm", run: func(_ *hostile, q *vq) string {
			for i := 0; i < 5000; i++ {
				q.notify(2)
			}
			for i := 0; i < 600; i++ {
				q.notify([]int{1, 4, 8}[i%3])
			}
			return q.read(seed, 3)
		}},
		{name: "reset-in-flight", run: func(h *hostile, q *vq) string { return resetInFlight(b, mem, seed) }},
		{name: "flood-bad-requests", run: func(h *hostile, q *vq) string {
			return floodBadRequests(q, h.a.num("gvmm.floods", 40))
		}},
		{name: "flood-broken-chains", run: func(h *hostile, q *vq) string {
			return floodBrokenChains(b, mem, h.a.num("gvmm.floods", 40)*5)
		}},
		{name: "good-read-after", run: func(_ *hostile, q *vq) string { return q.read(seed, 4) }},
	}
}

// resetInFlight posts reads and resets the device at once, 20 times; the
// reset must complete each time: "ok" or the first error.
func resetInFlight(b *bar, mem *dma, seed uint64) string {
	for i := 0; i < 20; i++ {
		q, out, err := setup(b, mem, queueSetup{})
		if err != nil || q == nil {
			return fmt.Sprintf("setup %d: %v %s", i, err, out)
		}
		t := q.mem.page(pgDesc)
		var heads []uint16
		for r := 0; r < 8; r++ {
			heads = append(heads, chain(t, 3*r, q.header(r, blkIn, uint64(r)),
				seg{q.mem.addr(pgData, 512*r), 512, true}, q.status(r)))
		}
		q.post(heads...)
		if err := b.reset(); err != nil {
			return err.Error()
		}
	}
	q, _, err := setup(b, mem, queueSetup{})
	if err != nil || q == nil {
		return "setup after resets failed"
	}
	if out := q.read(seed, 5); out != "used:status=0:data=ok" {
		return "read after resets: " + out
	}
	return "ok"
}

// floodBadRequests posts rounds of requests past the end of the disk,
// as many as the ring holds, and counts the answers: "used=N:ioerr=M".
func floodBadRequests(q *vq, rounds int) string {
	t := q.mem.page(pgDesc)
	per := int(q.size) / 2
	total, ioerr := 0, 0
	for r := 0; r < rounds; r++ {
		heads := make([]uint16, per)
		for i := range heads {
			heads[i] = chain(t, 2*i, q.header(i, blkIn, q.capacity+1), q.status(i))
		}
		q.post(heads...)
		if out := q.await(uint16(per), awaitLimit); out != "used" {
			return fmt.Sprintf("round %d: %s", r, out)
		}
		for i := 0; i < per; i++ {
			if q.statusByte(i) == 1 {
				ioerr++
			}
		}
		total += per
	}
	return fmt.Sprintf("used=%d:ioerr=%d", total, ioerr)
}

// floodBrokenChains sets the queue up, breaks it with a looping chain and
// resets it, n times: "needs-reset=N" when the device refused each.
func floodBrokenChains(b *bar, mem *dma, n int) string {
	refused := 0
	for i := 0; i < n; i++ {
		q, out, err := setup(b, mem, queueSetup{})
		if err != nil || q == nil {
			return fmt.Sprintf("setup %d: %v %s", i, err, out)
		}
		putDesc(q.mem.page(pgDesc), 0, q.mem.addr(pgHeader, 0), 16, descNext, 0)
		q.post(0)
		if q.await(1, awaitLimit) == "needs-reset" {
			refused++
		}
	}
	if err := b.reset(); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("needs-reset=%d", refused)
}
