package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
)

// The net phase drives gvmm's virtio-net function by hand (this guest
// loads no virtio_net; the phase unbinds the function from virtio-pci):
// tx chains shorter than the header, without a readable buffer, larger
// than any frame or outside RAM; rx chains too small or readable; and a
// driver that sends 1500 echo requests to the host without posting rx
// buffers for the replies. It reports "net=CASE:OUTCOME". The host side
// of the TAP (tests/hostile) has gvmm.net's host address and MAC and
// knows the guest's address, so its replies come to the TAP without ARP.
//
// While the replies wait, it reports "netstall=begin" and sleeps, so the
// host can check that gvmm does not spin on the TAP, then "netstall=end".

// The net function: virtio 1.0 device 0x1040 + 1.
const netPCIDevice = "0x1041"

const (
	netHdrSize   = 12
	netFeatMAC   = 1 << 5
	netStallTime = 3 * time.Second
	netFlood     = 1500
)

// Pages of the net driver's memory: rings of the rx and tx queues, one
// page per rx buffer, one per tx slot.
const (
	netPgRings = 0
	netPgRx    = netPgRings + 6
	netPgTx    = netPgRx + vsQueueSize
	netPages   = netPgTx + vsQueueSize
)

// netdev is the hand-driven device; it reuses the vsock phase's queue.
type netdev struct {
	b      *bar
	mem    *dma
	rx, tx *vsq
	mac    net.HardwareAddr
	txSlot int
}

// setupNet resets the function and sets it up as a driver would with
// VERSION_1 and MAC only: rx chains must then hold a whole MTU frame.
func setupNet(b *bar, mem *dma) (*netdev, error) {
	if err := b.reset(); err != nil {
		return nil, err
	}
	clear(mem.b)
	w, c := b.w, b.common
	status := uint64(statusAcknowledge | statusDriver)
	w.write(c+ccDeviceStatus, 1, status)
	w.write(c+ccDriverFeatureSelect, 4, 0)
	w.write(c+ccDriverFeature, 4, netFeatMAC)
	w.write(c+ccDriverFeatureSelect, 4, 1)
	w.write(c+ccDriverFeature, 4, featVersion1>>32)
	status |= statusFeaturesOK
	w.write(c+ccDeviceStatus, 1, status)
	if b.status()&statusFeaturesOK == 0 {
		return nil, errors.New("the net device refused VERSION_1|MAC")
	}
	d := &netdev{b: b, mem: mem}
	for i, q := range []**vsq{&d.rx, &d.tx} {
		*q = &vsq{b: b, mem: mem, idx: i, page: netPgRings + 3*i}
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
		return nil, errors.New("the net device needs a reset after DRIVER_OK")
	}
	for i := range 6 {
		d.mac = append(d.mac, byte(w.read(b.device+uint64(i), 1)))
	}
	return d, nil
}

// postRx gives the device rx buffers [first, first+n), a page each.
func (d *netdev) postRx(first, n int, size uint32, flags uint16) {
	heads := make([]uint16, n)
	for i := range n {
		putDesc(d.rx.desc(), first+i, d.mem.addr(netPgRx+first+i, 0), size, flags, 0)
		heads[i] = uint16(first + i)
	}
	d.rx.post(heads...)
}

// send posts frame (header included) in the next tx slot, one page each;
// raw, if set, replaces the chain: it gets the slot's descriptor and
// page.
func (d *netdev) send(frame []byte, raw func(desc []byte, slot int, page seg)) {
	slot := d.txSlot % vsQueueSize
	d.txSlot++
	copy(d.mem.page(netPgTx+slot), frame)
	page := seg{addr: d.mem.addr(netPgTx+slot, 0), n: uint32(len(frame))}
	if raw != nil {
		raw(d.tx.desc(), slot, page)
	} else {
		chain(d.tx.desc(), slot, page)
	}
	d.tx.post(uint16(slot))
}

// awaitTx waits for n tx completions and returns their used lengths.
func (d *netdev) awaitTx(n int) []uint32 {
	var lens []uint32
	for deadline := time.Now().Add(awaitLimit); len(lens) < n && time.Now().Before(deadline); {
		if _, l, ok := d.tx.next(); ok {
			lens = append(lens, l)
			continue
		}
		time.Sleep(time.Millisecond)
	}
	return lens
}

// echoRequest is an ICMP echo request from ip to host, in an Ethernet
// frame to hostMAC, behind a zero virtio-net header.
func (d *netdev) echoRequest(ip, host net.IP, hostMAC net.HardwareAddr, seq uint16) []byte {
	f := make([]byte, netHdrSize+14+20+8+32)
	e := f[netHdrSize:]
	copy(e[0:], hostMAC)
	copy(e[6:], d.mac)
	binary.BigEndian.PutUint16(e[12:], 0x0800)
	p := e[14:]
	p[0], p[8], p[9] = 0x45, 64, 1 // IPv4, 20-byte header; TTL; ICMP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[12:], ip.To4())
	copy(p[16:], host.To4())
	binary.BigEndian.PutUint16(p[10:], inetSum(p[:20]))
	m := p[20:]
	m[0] = 8 // echo request
	binary.BigEndian.PutUint16(m[4:], 0x6776)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], "gvmm hostile guest echo payload!")
	binary.BigEndian.PutUint16(m[2:], inetSum(m))
	return f
}

// inetSum is the Internet checksum (RFC 1071).
func inetSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// isEchoReply reports whether rx buffer page holds an echo reply.
func isEchoReply(b []byte, n uint32) bool {
	if n < netHdrSize+14+20+8 {
		return false
	}
	e := b[netHdrSize:]
	return binary.BigEndian.Uint16(e[12:]) == 0x0800 && e[14+9] == 1 && e[14+20] == 0
}

// receive takes rx completions until quiet for quiet, giving each buffer
// back as a page if repost, and counts them and the echo replies among
// them.
func (d *netdev) receive(quiet time.Duration, repost bool) (frames, replies int, lens []uint32) {
	for deadline := time.Now().Add(quiet); time.Now().Before(deadline); {
		id, n, ok := d.rx.next()
		if !ok {
			time.Sleep(time.Millisecond)
			continue
		}
		frames++
		lens = append(lens, n)
		if id < vsQueueSize && isEchoReply(d.mem.page(netPgRx+int(id)), n) {
			replies++
		}
		if repost {
			d.postRx(int(id%vsQueueSize), 1, pageSize, descWrite)
		}
		deadline = time.Now().Add(quiet)
	}
	return frames, replies, lens
}

// netAddrs are gvmm.net's guest IP, host IP and host MAC.
type netAddrs struct {
	ip, host net.IP
	hostMAC  net.HardwareAddr
}

func parseNetArg(v string) (netAddrs, error) {
	parts := strings.Split(v, ",")
	if len(parts) != 3 {
		return netAddrs{}, fmt.Errorf("gvmm.net=%q: want GUEST_IP,HOST_IP,HOST_MAC", v)
	}
	a := netAddrs{ip: net.ParseIP(parts[0]), host: net.ParseIP(parts[1])}
	var err error
	if a.hostMAC, err = net.ParseMAC(parts[2]); err != nil || a.ip == nil || a.host == nil {
		return netAddrs{}, fmt.Errorf("gvmm.net=%q: want GUEST_IP,HOST_IP,HOST_MAC", v)
	}
	return a, nil
}

type netCase struct {
	name string
	run  func(d *netdev, h *hostile, a netAddrs) string
}

// attackNet runs every case on a fresh setup and reports its outcome.
func (h *hostile) attackNet() (int, error) {
	addrs, err := parseNetArg(h.a.str("gvmm.net", ""))
	if err != nil {
		return 0, err
	}
	dir := findFunction("0x1af4", netPCIDevice)
	if dir == "" {
		return 0, errors.New("no virtio-net function")
	}
	cl, err := claim(dir, netPages)
	if err != nil {
		return 0, err
	}
	defer cl.release()
	b, mem := cl.bar, cl.mem
	n := 0
	for _, c := range netCases {
		d, err := setupNet(b, mem)
		if err != nil {
			return n, fmt.Errorf("%s: %w", c.name, err)
		}
		guest.Report("net", c.name+":"+c.run(d, h, addrs))
		n += d.txSlot
	}
	return n, b.reset()
}

// txOutcome is what a tx case's one chain came to.
func (d *netdev) txOutcome() string {
	lens := d.awaitTx(1)
	switch {
	case d.b.status()&statusNeedsReset != 0:
		return "needs-reset"
	case len(lens) == 1:
		return fmt.Sprintf("used:len=%d", lens[0])
	}
	return "no-answer"
}

var netCases = []netCase{
	{"tx-short", func(d *netdev, _ *hostile, _ netAddrs) string {
		d.send(make([]byte, netHdrSize-1), nil)
		return d.txOutcome()
	}},
	{"tx-no-readable", func(d *netdev, _ *hostile, _ netAddrs) string {
		d.send(nil, func(desc []byte, slot int, page seg) {
			chain(desc, slot, seg{addr: page.addr, n: 64, write: true})
		})
		return d.txOutcome()
	}},
	// A header and 70000 bytes of whatever RAM follows the slot's page:
	// more than a 64 KiB frame.
	{"tx-oversized", func(d *netdev, _ *hostile, _ netAddrs) string {
		d.send(nil, func(desc []byte, slot int, page seg) {
			chain(desc, slot, seg{addr: page.addr, n: netHdrSize + 70000})
		})
		return d.txOutcome()
	}},
	{"tx-beyond-ram", func(d *netdev, h *hostile, _ netAddrs) string {
		d.send(nil, func(desc []byte, slot int, _ seg) {
			chain(desc, slot, seg{addr: h.ramEnd + 1<<30, n: 64})
		})
		return awaitNeedsReset(d.b)
	}},
	// Without MRG_RXBUF each rx chain must hold an MTU frame; these do
	// not, or are the wrong way round: the device hands them back unused.
	{"rx-short", func(d *netdev, _ *hostile, _ netAddrs) string {
		d.postRx(0, 1, netHdrSize-2, descWrite)
		_, _, lens := d.receive(time.Second, false)
		return fmt.Sprintf("used=%v", lens)
	}},
	{"rx-below-mtu", func(d *netdev, _ *hostile, _ netAddrs) string {
		d.postRx(0, 1, 1000, descWrite)
		_, _, lens := d.receive(time.Second, false)
		return fmt.Sprintf("used=%v", lens)
	}},
	{"rx-readable", func(d *netdev, _ *hostile, _ netAddrs) string {
		d.postRx(0, 1, pageSize, 0)
		_, _, lens := d.receive(time.Second, false)
		return fmt.Sprintf("used=%v", lens)
	}},
	// Echo requests whose replies find no rx buffer: they wait in the
	// TAP's queue, which drops beyond its length (500 frames), while
	// gvmm waits for buffers without reading; then they come.
	{"rx-stall", func(d *netdev, _ *hostile, a netAddrs) string {
		for seq := range netFlood {
			d.send(d.echoRequest(a.ip, a.host, a.hostMAC, uint16(seq)), nil)
			if seq%vsQueueSize == vsQueueSize-1 {
				if got := len(d.awaitTx(vsQueueSize)); got != vsQueueSize {
					return fmt.Sprintf("tx-stuck:%d", seq)
				}
			}
		}
		d.awaitTx(netFlood % vsQueueSize)
		guest.Report("netstall", "begin")
		time.Sleep(netStallTime)
		guest.Report("netstall", "end")
		d.postRx(0, vsQueueSize, pageSize, descWrite)
		frames, replies, _ := d.receive(2*time.Second, true)
		return fmt.Sprintf("replies>0=%t:frames<=%d=%t", replies > 0, netQueueBound, frames <= netQueueBound)
	}},
	{"works-after", func(d *netdev, _ *hostile, a netAddrs) string {
		d.postRx(0, vsQueueSize, pageSize, descWrite)
		d.send(d.echoRequest(a.ip, a.host, a.hostMAC, 9999), nil)
		_, replies, _ := d.receive(2*time.Second, true)
		return fmt.Sprintf("replies=%d", replies)
	}},
}

// netQueueBound is the TAP's queue (tun's default txqueuelen, 500) and a
// few frames the host may send after the stall.
const netQueueBound = 520
