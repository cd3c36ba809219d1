// Package vsock is a virtio-vsock device (spec 5.10) whose host side is
// ordinary Go net.Conns: stream sockets between the guest and the host
// ("hybrid vsock", as in Firecracker and Cloud Hypervisor), with no need
// for the host's vhost-vsock module.
//
// The host connects to a guest port with Connect; guest connections to
// the host (CID 2) go to a Listener for their port, or else to the
// Options.Dial function (the machine dials a unix socket). Unix, in
// this package, serves Firecracker's host-side protocol on a unix socket.
//
// Flow control follows the spec's credit scheme both ways and nothing is
// buffered without bound: guest data waits in a per-connection ring of
// the buf_alloc the device advertises (a driver that overruns its credit
// loses the connection), and the device reads a host connection only
// while the guest has credit for the bytes, one chunk at a time. A
// connection whose host or guest side stops reading stalls only itself.
// Every field of every packet comes from the guest and is checked.
package vsock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/gvmm-dev/gvmm/internal/ratelog"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// Queues (spec 5.10.2).
const (
	RxQueue    = 0
	TxQueue    = 1
	EventQueue = 2
	QueueSize  = 256
)

// Limits.
const (
	// BufAlloc is the receive buffer the device advertises for each
	// connection: what guest data may wait for a slow host reader.
	BufAlloc = 256 << 10
	// DefaultMaxConns bounds the connections of one device, counting
	// those being set up; beyond it requests are refused (RST).
	DefaultMaxConns = 256
	// readChunk is the most the device reads from a host connection at
	// once, and so what it holds per connection on the way to the guest.
	readChunk = 64 << 10
	// maxReplies bounds the replies (RST) to packets of no connection
	// waiting for an rx buffer; a driver that makes more waits, as its
	// tx queue is no longer serviced until rx drains.
	maxReplies = 256
	// creditThreshold is how much the device forwards to the host
	// before it tells the guest (CREDIT_UPDATE) unasked.
	creditThreshold = BufAlloc / 4
	// ConnectTimeout bounds the guest's answer to a host's connection
	// request, and the device's connection to the host for a guest.
	ConnectTimeout = 5 * time.Second
	// listenBacklog bounds the guest connections a Listener holds
	// unaccepted.
	listenBacklog = 16
	// firstLocalPort starts the host ports of host-initiated
	// connections, above the ones people pick for services.
	firstLocalPort = 1 << 30
)

// MinCID is the lowest guest CID: 0 to 2 are the hypervisor's and the
// host's. CIDs are 32-bit in Linux (VMADDR_CID_ANY is the top one).
const (
	MinCID = 3
	MaxCID = 1<<32 - 2
)

// eventTransportReset is VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
const eventTransportReset = 0

// configSize is struct virtio_vsock_config: le64 guest_cid.
const configSize = 8

// Errors of the host-side API.
var (
	ErrNotReady     = errors.New("the guest's vsock driver is not running")
	ErrTooManyConns = errors.New("too many vsock connections")
	ErrRefused      = errors.New("vsock connection refused by the guest")
	ErrTimeout      = errors.New("vsock connection timed out")
	ErrReset        = errors.New("vsock connection reset")
	ErrPortInUse    = errors.New("vsock port already has a listener")
	ErrNoEventBuf   = errors.New("the guest's vsock driver has no event buffer")
	ErrClosed       = errors.New("vsock device closed")
)

// Options configure a device.
type Options struct {
	CID uint64
	// MaxConns is DefaultMaxConns when zero.
	MaxConns int
	// Dial connects a guest's connection to host port when no Listener
	// has the port; nil refuses them.
	Dial func(ctx context.Context, port uint32) (net.Conn, error)
	Log  *slog.Logger
}

// Device is a virtio-vsock device.
type Device struct {
	cid      uint64
	maxConns int
	dial     func(context.Context, uint32) (net.Conn, error)
	log      *slog.Logger
	glog     *ratelog.Logger

	mu        sync.Mutex
	active    bool
	mem       *memory.Memory
	rxq, txq  *queue.Queue // owned by their queue workers
	evq       *queue.Queue // guarded by mu
	kick      func(int)
	ctx       context.Context // ends at Reset: dials
	cancel    context.CancelFunc
	conns     map[connKey]*conn
	listeners map[uint32]*Listener
	nextPort  uint32
	pending   []*conn  // connections with rx work, each once
	replies   []Header // to packets of no connection
	txRoom    chan struct{}
	closed    bool           // no more listeners
	wg        sync.WaitGroup // connection goroutines and dials
	stats     Stats
}

// Stats count what the device did since it was made.
type Stats struct {
	Conns       int    // open now
	Accepted    uint64 // connections established, both ways
	Refused     uint64 // requests and stray packets answered RST, both ways
	CreditAbuse uint64 // connections reset for overrunning their credit
	TxBytes     uint64 // guest to host
	RxBytes     uint64 // host to guest
	TxPackets   uint64 // packets the guest sent, dropped ones included
	RxPackets   uint64 // packets given to the guest
	Dropped     uint64 // guest packets dropped as malformed or not from its CID
}

var _ virtio.Device = (*Device)(nil)

// New returns a device for the guest CID opts.CID.
func New(opts Options) (*Device, error) {
	if opts.CID < MinCID || opts.CID > MaxCID {
		return nil, fmt.Errorf("vsock: guest CID %d: want %d to %d", opts.CID, MinCID, MaxCID)
	}
	if opts.MaxConns < 0 {
		return nil, fmt.Errorf("vsock: %d connections", opts.MaxConns)
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("virtio", "vsock")
	d := &Device{
		cid:       opts.CID,
		maxConns:  opts.MaxConns,
		dial:      opts.Dial,
		log:       log,
		glog:      ratelog.New(log),
		conns:     map[connKey]*conn{},
		listeners: map[uint32]*Listener{},
		nextPort:  firstLocalPort,
		txRoom:    make(chan struct{}, 1),
	}
	if d.maxConns == 0 {
		d.maxConns = DefaultMaxConns
	}
	return d, nil
}

// CID returns the guest's CID.
func (d *Device) CID() uint64 { return d.cid }

// Stats returns the device's counters.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	s.Conns = len(d.conns)
	return s
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceVsock }

// Features implements virtio.Device: stream sockets only, which need no
// feature bit.
func (d *Device) Features() uint64 { return 0 }

// QueueMaxSizes implements virtio.Device.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize, QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, data []byte) {
	var cfg [configSize]byte
	binary.LittleEndian.PutUint64(cfg[:], d.cid)
	virtio.ReadConfigBytes(cfg[:], off, data)
}

// WriteConfig implements virtio.Device: the configuration is read-only.
func (d *Device) WriteConfig(off uint64, data []byte) {
	d.glog.Debug("ignored vsock configuration write", "offset", off, "width", len(data))
}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if a.Mem == nil || len(a.Queues) < 3 || a.Kick == nil {
		return errors.New("vsock: activation without memory, queues or kick")
	}
	if a.Queues[RxQueue] == nil || a.Queues[TxQueue] == nil || a.Queues[EventQueue] == nil {
		return errors.New("vsock: the driver did not enable all three queues")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mem, d.kick = a.Mem, a.Kick
	d.rxq, d.txq, d.evq = a.Queues[RxQueue], a.Queues[TxQueue], a.Queues[EventQueue]
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.active = true
	d.log.Debug("vsock activated", "cid", d.cid)
	return nil
}

// Reset implements virtio.Device: every connection ends, their host
// sides closed; listeners stay, they are the host's.
func (d *Device) Reset() {
	d.mu.Lock()
	d.closeAll()
	d.active = false
	d.mem, d.rxq, d.txq, d.evq, d.kick = nil, nil, nil, nil, nil
	if d.cancel != nil {
		d.cancel()
	}
	d.mu.Unlock()
	d.wg.Wait()
}

// Close closes the listeners and refuses new ones, for a device whose
// machine has ended; call it after Reset.
func (d *Device) Close() {
	d.mu.Lock()
	d.closed = true
	ls := make([]*Listener, 0, len(d.listeners))
	for _, l := range d.listeners {
		ls = append(ls, l)
	}
	d.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
}

// closeAll ends every connection without telling the guest.
func (d *Device) closeAll() {
	for _, c := range d.conns {
		d.kill(c, false, ErrReset)
	}
	clear(d.conns)
	d.pending, d.replies = nil, nil
}

// ResetTransport ends every connection and sends the guest a
// TRANSPORT_RESET event, after which its driver drops its sockets and
// reads the CID again (spec 5.10.6.7), as after a snapshot restore.
func (d *Device) ResetTransport() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active {
		return ErrNotReady
	}
	d.closeAll()
	var c queue.Chain
	ok, err := d.evq.Pop(&c)
	if err != nil {
		return fmt.Errorf("vsock event queue: %w", err)
	}
	if !ok {
		return ErrNoEventBuf
	}
	var ev [4]byte
	binary.LittleEndian.PutUint32(ev[:], eventTransportReset)
	n, err := fromBuffers(c.Writable).copyIn(d.mem, ev[:])
	if err == nil && n < len(ev) {
		err = fmt.Errorf("event buffer of %d bytes", n)
	}
	if err != nil {
		d.glog.Warn("bad vsock event buffer", "head", c.Head, "err", err)
		n = 0
	}
	if err := d.evq.Push(c.Head, uint32(n)); err != nil {
		return err
	}
	return d.evq.SignalUsed()
}

// Process implements virtio.Device.
func (d *Device) Process(ctx context.Context, idx int) error {
	switch idx {
	case RxQueue:
		return d.processRx()
	case TxQueue:
		return d.processTx(ctx)
	}
	return nil // event buffers wait for ResetTransport
}

// reply queues a packet answering h; called with mu held.
func (d *Device) reply(h Header, op Op) {
	d.replies = append(d.replies, Header{
		SrcCID: h.DstCID, DstCID: h.SrcCID, SrcPort: h.DstPort, DstPort: h.SrcPort,
		Type: TypeStream, Op: op,
	})
	d.kick(RxQueue)
}

// processTx handles the guest's packets. It waits while too many
// replies are pending, so that a driver sending to ports nobody
// listens on, without reading the answers, cannot grow them. The driver
// is interrupted once per batch.
func (d *Device) processTx(ctx context.Context) (err error) {
	pushed := false
	defer func() {
		if pushed && err == nil {
			err = d.txq.SignalUsed()
		}
	}()
	var c queue.Chain
	for ctx.Err() == nil {
		d.mu.Lock()
		full := len(d.replies) >= maxReplies
		d.mu.Unlock()
		if full {
			if pushed {
				if err := d.txq.SignalUsed(); err != nil {
					return err
				}
				pushed = false
			}
			select {
			case <-ctx.Done():
				return nil
			case <-d.txRoom:
				continue
			}
		}
		ok, err := d.txq.Pop(&c)
		if err != nil || !ok {
			return err
		}
		p, perr := ParsePacket(c, d.mem, BufAlloc)
		d.mu.Lock()
		d.stats.TxPackets++
		if perr != nil {
			d.stats.Refused++
			d.stats.Dropped++
			d.glog.Warn("bad vsock packet", "head", c.Head, "err", perr)
			if !errors.Is(perr, ErrShortHeader) && !errors.Is(perr, ErrWriteOnly) && p.Op != OpRST && p.SrcCID == d.cid {
				d.resetPacket(p.Header)
			}
		} else {
			d.handle(p)
		}
		d.mu.Unlock()
		if err := d.txq.Push(c.Head, 0); err != nil {
			return err
		}
		pushed = true
	}
	return nil
}

// resetPacket ends the connection h belongs to, if any, and answers RST.
func (d *Device) resetPacket(h Header) {
	if c := d.conns[connKey{local: h.DstPort, peer: h.SrcPort}]; c != nil {
		d.kill(c, true, ErrReset)
		return
	}
	d.reply(h, OpRST)
}

// handle carries out one packet from the guest; called with mu held.
func (d *Device) handle(p Packet) {
	h := p.Header
	if h.SrcCID != d.cid {
		d.stats.Dropped++
		d.glog.Warn("vsock packet from a foreign CID dropped", "src_cid", h.SrcCID, "op", h.Op)
		return
	}
	key := connKey{local: h.DstPort, peer: h.SrcPort}
	c := d.conns[key]
	switch {
	case h.Op == OpRST:
		if c != nil {
			d.kill(c, false, ErrRefused)
		}
		return
	case h.DstCID != HostCID || h.Type != TypeStream:
		d.stats.Refused++
		d.resetPacket(h)
		return
	case c == nil:
		if h.Op == OpRequest {
			d.guestConnect(h)
			return
		}
		d.stats.Refused++
		d.reply(h, OpRST)
		return
	case c.closed:
		return // an RST is on its way
	}
	if h.BufAlloc != c.peerBufAlloc || h.FwdCnt != c.peerFwdCnt {
		c.peerBufAlloc, c.peerFwdCnt, c.creditAsked = h.BufAlloc, h.FwdCnt, false
		poke(c.rxWake)
	}
	switch h.Op {
	case OpResponse:
		if c.state != stateConnecting {
			d.kill(c, true, ErrReset)
			return
		}
		d.established(c)
	case OpRW:
		d.guestData(c, p)
	case OpCreditUpdate:
	case OpCreditRequest:
		d.want(c, wantCredit)
	case OpShutdown:
		c.peerShut |= h.Flags & shutdownBoth
		poke(c.txWake)
	default: // REQUEST on a live connection, or an unknown op
		d.kill(c, true, ErrReset)
	}
}

// guestData queues an RW packet's payload for the host.
func (d *Device) guestData(c *conn, p Packet) {
	if c.state != stateEstablished || c.peerShut&ShutdownSend != 0 {
		d.kill(c, true, ErrReset)
		return
	}
	a, b, ok := c.tx.reserve(int(p.Len))
	if !ok {
		d.stats.CreditAbuse++
		d.glog.Warn("vsock guest sent past its credit: connection reset", "port", c.key.local, "guest_port", c.key.peer, "len", p.Len, "free", c.tx.free())
		d.kill(c, true, ErrReset)
		return
	}
	first, rest := p.Data.split(uint64(len(a)))
	err := first.copyOut(d.mem, a)
	if err == nil {
		err = rest.copyOut(d.mem, b)
	}
	if err != nil { // checked by the chain walker; cannot happen
		d.kill(c, true, err)
		return
	}
	d.stats.TxBytes += uint64(p.Len)
	poke(c.txWake)
}

// guestConnect answers a guest's connection request.
func (d *Device) guestConnect(h Header) {
	key := connKey{local: h.DstPort, peer: h.SrcPort}
	if len(d.conns) >= d.maxConns {
		d.stats.Refused++
		d.glog.Warn("vsock connection refused: too many connections", "port", key.local, "max", d.maxConns)
		d.reply(h, OpRST)
		return
	}
	if l := d.listeners[key.local]; l != nil {
		ours, theirs, err := Pipe()
		if err != nil {
			d.stats.Refused++
			d.glog.Warn("vsock connection refused", "port", key.local, "err", err)
			d.reply(h, OpRST)
			return
		}
		select {
		case l.ch <- theirs:
		default:
			ours.Close()
			theirs.Close()
			d.stats.Refused++
			d.glog.Warn("vsock connection refused: listener backlog full", "port", key.local)
			d.reply(h, OpRST)
			return
		}
		c := d.newConn(key, ours, h)
		d.established(c)
		return
	}
	if d.dial == nil {
		d.stats.Refused++
		d.reply(h, OpRST)
		return
	}
	c := d.newConn(key, nil, h)
	c.state = stateDialing
	ctx := d.ctx
	d.wg.Go(func() {
		ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
		defer cancel()
		host, err := d.dial(ctx, key.local)
		d.mu.Lock()
		defer d.mu.Unlock()
		switch {
		case err != nil:
			d.stats.Refused++
			d.glog.Debug("vsock guest connection to the host refused", "port", key.local, "err", err)
			d.kill(c, true, err)
		case c.closed:
			host.Close()
		default:
			c.host = host
			d.established(c)
		}
	})
}

// Connect connects host to the guest's port and returns the host port of
// the connection once the guest accepted it. From then on the device
// owns host: it closes it when the connection ends, or at once if the
// connection fails. greeting, if set, is written to host before any of
// the guest's data, as soon as the guest accepted.
func (d *Device) Connect(ctx context.Context, host net.Conn, port uint32, greeting func(localPort uint32) []byte) (uint32, error) {
	d.mu.Lock()
	if !d.active {
		d.mu.Unlock()
		host.Close()
		return 0, ErrNotReady
	}
	if len(d.conns) >= d.maxConns {
		d.mu.Unlock()
		host.Close()
		return 0, fmt.Errorf("%w: at most %d", ErrTooManyConns, d.maxConns)
	}
	key := connKey{local: d.nextPort, peer: port}
	for d.conns[key] != nil {
		key.local++
	}
	d.nextPort = max(key.local+1, firstLocalPort)
	c := d.newConn(key, host, Header{})
	c.state, c.result, c.greeting = stateConnecting, make(chan error, 1), greeting
	d.want(c, wantRequest)
	timer := time.AfterFunc(ConnectTimeout, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if c.state == stateConnecting && !c.closed {
			d.kill(c, true, ErrTimeout)
		}
	})
	d.mu.Unlock()
	defer timer.Stop()
	select {
	case err := <-c.result:
		if err != nil {
			return 0, fmt.Errorf("vsock port %d: %w", port, err)
		}
		return key.local, nil
	case <-ctx.Done():
		d.mu.Lock()
		if !c.closed && c.state == stateConnecting {
			d.kill(c, true, ctx.Err())
		}
		d.mu.Unlock()
		if err := <-c.result; err != nil {
			return 0, fmt.Errorf("vsock port %d: %w", port, err)
		}
		return key.local, nil // the guest answered first
	}
}

// Listen returns a listener for guest connections to host port port.
func (d *Device) Listen(port uint32) (*Listener, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	if d.listeners[port] != nil {
		return nil, fmt.Errorf("%w: %d", ErrPortInUse, port)
	}
	l := &Listener{d: d, port: port, ch: make(chan net.Conn, listenBacklog), done: make(chan struct{})}
	d.listeners[port] = l
	return l, nil
}

// want records rx work for c; called with mu held.
func (d *Device) want(c *conn, w wants) {
	c.wants |= w
	d.schedule(c)
}

// schedule puts c on the rx work list; called with mu held.
func (d *Device) schedule(c *conn) {
	if !c.queued {
		c.queued = true
		d.pending = append(d.pending, c)
	}
	if d.kick != nil {
		d.kick(RxQueue)
	}
}

// kill ends c: its host side is closed, its goroutines stop, a waiting
// Connect gets err, and the guest an RST if rst, after which c leaves
// the table; without rst it leaves it now. Called with mu held.
func (d *Device) kill(c *conn, rst bool, err error) {
	if c.closed {
		return
	}
	c.closed = true
	if c.host != nil {
		c.host.Close()
	}
	poke(c.rxWake)
	poke(c.txWake)
	c.settle(err)
	c.rxData = nil
	if rst {
		c.wants = wantRST
		d.schedule(c)
		return
	}
	delete(d.conns, c.key)
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// processRx fills the guest's rx buffers with pending packets, replies
// first, then connections in turn.
func (d *Device) processRx() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active {
		return nil
	}
	used := false
	defer func() {
		if used {
			// Errors here are the interrupt's; the next fill retries.
			if err := d.rxq.SignalUsed(); err != nil {
				d.log.Error("vsock rx interrupt", "err", err)
			}
		}
	}()
	var ch queue.Chain
	var hb [HeaderSize]byte
	for {
		h, c, ok := d.nextRx()
		if !ok {
			return nil
		}
		got, err := d.rxq.Pop(&ch)
		if err != nil || !got {
			return err
		}
		dst := fromBuffers(ch.Writable)
		if dst.len() < HeaderSize || len(ch.Readable) > 0 {
			return fmt.Errorf("vsock rx chain %d: %d device-writable bytes and %d readable buffers, want a %d-byte header's room and no readable ones",
				ch.Head, dst.len(), len(ch.Readable), HeaderSize)
		}
		hdr, data := dst.split(HeaderSize)
		var payload []byte
		if c != nil {
			h = d.connPacket(c, data.len())
			payload = c.rxData[:h.Len]
		}
		h.Put(hb[:])
		if _, err := hdr.copyIn(d.mem, hb[:]); err != nil {
			return err
		}
		if _, err := data.copyIn(d.mem, payload); err != nil {
			return err
		}
		if c != nil {
			d.sent(c, h)
		} else {
			d.replies = d.replies[1:]
			poke(d.txRoom)
		}
		if err := d.rxq.Push(ch.Head, HeaderSize+h.Len); err != nil {
			return err
		}
		d.stats.RxPackets++
		used = true
	}
}

// nextRx returns the next packet to send: a reply, or a connection with
// work. Connections without work leave the list.
func (d *Device) nextRx() (Header, *conn, bool) {
	if len(d.replies) > 0 {
		return d.replies[0], nil, true
	}
	for len(d.pending) > 0 {
		c := d.pending[0]
		if c.rxOp() != OpInvalid {
			return Header{}, c, true
		}
		c.queued = false
		d.pending[0] = nil
		d.pending = d.pending[1:]
	}
	d.pending = nil // let the backing array go
	return Header{}, nil, false
}

// connPacket builds c's next packet for an rx buffer with room bytes of
// payload.
func (d *Device) connPacket(c *conn, room uint64) Header {
	h := Header{
		SrcCID: HostCID, DstCID: d.cid, SrcPort: c.key.local, DstPort: c.key.peer,
		Type: TypeStream, Op: c.rxOp(), BufAlloc: BufAlloc, FwdCnt: c.fwdCnt,
	}
	switch h.Op {
	case OpRW:
		h.Len = uint32(min(uint64(len(c.rxData)), room))
	case OpShutdown:
		h.Flags = ShutdownSend
	}
	return h
}

// sent updates c for the packet h the guest now has.
func (d *Device) sent(c *conn, h Header) {
	c.advertisedFwd = c.fwdCnt
	switch h.Op {
	case OpRST:
		c.wants = 0
		delete(d.conns, c.key)
	case OpRequest:
		c.wants &^= wantRequest
	case OpResponse:
		c.wants &^= wantResponse
	case OpRW:
		c.rxData = c.rxData[h.Len:]
		c.rxCnt += h.Len
		d.stats.RxBytes += uint64(h.Len)
		if len(c.rxData) == 0 {
			poke(c.rxWake)
		}
	case OpShutdown:
		c.wants &^= wantShutdown
		if c.hostWriteClosed { // both ways are done
			d.kill(c, true, nil)
		}
	case OpCreditUpdate:
		c.wants &^= wantCredit
	case OpCreditRequest:
		c.wants &^= wantCreditRequest
	}
}

// Listener hands out the guest's connections to one host port. It is a
// net.Listener.
type Listener struct {
	d    *Device
	port uint32
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

var _ net.Listener = (*Listener)(nil)

// Accept waits for the guest's next connection to the port.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening; connections not yet accepted are reset.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.d.mu.Lock()
		if l.d.listeners[l.port] == l {
			delete(l.d.listeners, l.port)
		}
		l.d.mu.Unlock()
		close(l.done)
		for {
			select {
			case c := <-l.ch:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

// Addr returns the host end's address.
func (l *Listener) Addr() net.Addr { return Addr{CID: HostCID, Port: l.port} }

// Addr is a vsock address.
type Addr struct {
	CID  uint64
	Port uint32
}

// Network implements net.Addr.
func (Addr) Network() string { return "vsock" }

func (a Addr) String() string { return fmt.Sprintf("%d:%d", a.CID, a.Port) }

// closeWriter is a connection that can end its write side alone, as
// *net.UnixConn and *net.TCPConn can.
type closeWriter interface{ CloseWrite() error }
