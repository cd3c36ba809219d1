package vsock

import (
	"errors"
	"io"
	"net"
)

// connKey names a connection: the host's port and the guest's.
type connKey struct{ local, peer uint32 }

type connState int

const (
	stateConnecting  connState = iota // host-initiated, REQUEST sent or due
	stateDialing                      // guest-initiated, connecting the host side
	stateEstablished                  // data flows
)

// wants are the control packets a connection owes the guest.
type wants uint8

const (
	wantRST wants = 1 << iota
	wantResponse
	wantRequest
	wantShutdown
	wantCredit
	wantCreditRequest
)

// conn is one stream between a guest port and a host net.Conn. The
// device's mutex guards every field; two goroutines move the data, each
// blocking on the host connection without the lock: readLoop (host to
// guest) and writeLoop (guest to host).
type conn struct {
	key      connKey
	host     net.Conn // nil while dialing
	state    connState
	closed   bool // host side closed; an RST may still be owed
	wants    wants
	queued   bool                // on the device's rx work list
	result   chan error          // a waiting Connect's answer; cap 1
	settled  bool                // result sent
	greeting func(uint32) []byte // written to host first

	// Guest to host: the guest's data waiting for the host, and the
	// count of bytes given to the host (fwd_cnt) and last told the guest.
	tx              ring
	fwdCnt          uint32
	advertisedFwd   uint32
	peerShut        uint32 // SHUTDOWN flags the guest sent
	hostWriteClosed bool
	txWake          chan struct{}

	// Host to guest: the guest's receive buffer and how much of it it
	// freed, the bytes sent to it (tx_cnt), and a chunk read from the
	// host waiting for rx buffers.
	peerBufAlloc, peerFwdCnt uint32
	rxCnt                    uint32
	creditAsked              bool // CREDIT_REQUEST sent since the guest's credit last grew
	rxData                   []byte
	hostEOF                  bool
	rxWake                   chan struct{}
}

func (d *Device) newConn(key connKey, host net.Conn, req Header) *conn {
	c := &conn{
		key: key, host: host, tx: newRing(BufAlloc),
		txWake: make(chan struct{}, 1), rxWake: make(chan struct{}, 1),
		peerBufAlloc: req.BufAlloc, peerFwdCnt: req.FwdCnt,
	}
	d.conns[key] = c
	return c
}

// settle answers a waiting Connect, once.
func (c *conn) settle(err error) {
	if c.result != nil && !c.settled {
		c.settled = true
		c.result <- err
	}
}

// established starts moving data on c.
func (d *Device) established(c *conn) {
	c.state = stateEstablished
	d.stats.Accepted++
	if c.result != nil {
		c.settle(nil)
	} else {
		d.want(c, wantResponse)
	}
	d.wg.Go(func() { d.readLoop(c) })
	d.wg.Go(func() { d.writeLoop(c) })
}

// rxOp is the packet c sends next, most urgent first; OpInvalid if none.
func (c *conn) rxOp() Op {
	switch {
	case c.wants&wantRST != 0:
		return OpRST
	case c.closed:
		return OpInvalid
	case c.wants&wantResponse != 0:
		return OpResponse
	case c.wants&wantRequest != 0:
		return OpRequest
	case len(c.rxData) > 0:
		return OpRW
	case c.wants&wantShutdown != 0:
		return OpShutdown
	case c.wants&wantCredit != 0:
		return OpCreditUpdate
	case c.wants&wantCreditRequest != 0:
		return OpCreditRequest
	}
	return OpInvalid
}

// peerFree is the guest's receive buffer space not taken by bytes sent
// to it. A guest that lies about it makes its own connection stall or
// run faster, never grows what the device holds: reads are one chunk.
func (c *conn) peerFree() uint32 {
	inflight := c.rxCnt - c.peerFwdCnt
	if inflight >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inflight
}

// readLoop moves host data to the guest: it reads only when the guest
// has credit for it and the previous chunk has gone into rx buffers.
func (d *Device) readLoop(c *conn) {
	buf := make([]byte, readChunk)
	for {
		d.mu.Lock()
		for !c.closed && c.peerShut&ShutdownRecv == 0 && (len(c.rxData) > 0 || c.peerFree() == 0) {
			if len(c.rxData) == 0 && !c.creditAsked {
				// Out of credit: ask once, in case an update was
				// lost; the guest's answer does not ask again unless
				// its credit grew meanwhile.
				c.creditAsked = true
				d.want(c, wantCreditRequest)
			}
			d.mu.Unlock()
			<-c.rxWake
			d.mu.Lock()
		}
		if c.closed || c.peerShut&ShutdownRecv != 0 {
			d.mu.Unlock()
			return
		}
		n, host := min(readChunk, c.peerFree()), c.host
		d.mu.Unlock()
		k, err := host.Read(buf[:n])
		d.mu.Lock()
		if c.closed {
			d.mu.Unlock()
			return
		}
		if k > 0 {
			c.rxData = buf[:k]
			d.schedule(c)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				c.hostEOF = true
				d.want(c, wantShutdown)
			} else {
				d.kill(c, true, err)
			}
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
}

// writeWork reports whether writeLoop has something to do.
func (c *conn) writeWork() bool {
	return c.closed || c.tx.len > 0 || c.peerShut == shutdownBoth ||
		c.peerShut&ShutdownSend != 0 && !c.hostWriteClosed
}

// writeLoop moves guest data to the host, and tells the guest of the
// room it made once it is worth a packet.
func (d *Device) writeLoop(c *conn) {
	if c.greeting != nil {
		if _, err := c.host.Write(c.greeting(c.key.local)); err != nil {
			d.mu.Lock()
			d.kill(c, true, err)
			d.mu.Unlock()
			return
		}
	}
	for {
		d.mu.Lock()
		for !c.writeWork() {
			d.mu.Unlock()
			<-c.txWake
			d.mu.Lock()
		}
		if c.closed {
			d.mu.Unlock()
			return
		}
		if c.tx.len == 0 {
			// The guest sends no more and all it sent is forwarded.
			if c.peerShut == shutdownBoth || c.hostEOF && c.wants&wantShutdown == 0 {
				d.kill(c, true, nil)
				d.mu.Unlock()
				return
			}
			c.hostWriteClosed = true
			host := c.host
			d.mu.Unlock()
			if cw, ok := host.(closeWriter); ok {
				_ = cw.CloseWrite() // a failure shows on the next read
			}
			continue
		}
		seg, host := c.tx.readable(), c.host
		d.mu.Unlock()
		n, err := host.Write(seg)
		d.mu.Lock()
		if c.closed {
			d.mu.Unlock()
			return
		}
		c.tx.consume(n)
		c.fwdCnt += uint32(n)
		if err != nil {
			d.kill(c, true, err)
			d.mu.Unlock()
			return
		}
		if c.fwdCnt-c.advertisedFwd >= creditThreshold {
			d.want(c, wantCredit)
		}
		d.mu.Unlock()
	}
}
