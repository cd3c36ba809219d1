package vsock

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

func TestNewRejectsCIDs(t *testing.T) {
	for _, cid := range []uint64{0, 1, 2, 1<<32 - 1, 1 << 40} {
		_, err := New(Options{CID: cid})
		assert.Error(t, err, "CID %d", cid)
	}
}

func TestConfigIsTheCID(t *testing.T) {
	r := newRig(t, Options{CID: 0x12345678})
	assert.Equal(t, uint64(0x12345678), r.drv.ReadDeviceConfig(0, 8))
	assert.Equal(t, uint64(0x5678), r.drv.ReadDeviceConfig(0, 2))
	assert.Zero(t, r.drv.ReadDeviceConfig(4, 4))
	assert.Zero(t, r.drv.ReadDeviceConfig(8, 4), "past the configuration")
}

// listen returns a listener on the rig's device for host port port.
func listen(t *testing.T, r *rig, port uint32) *Listener {
	t.Helper()
	l, err := r.d.Listen(port)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

func accept(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	c, err := l.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// pipeDial is a Dial whose host ends are net.Pipes: unbuffered, so a
// host that does not read holds the device's writes exactly.
func pipeDial(t *testing.T) (func(context.Context, uint32) (net.Conn, error), <-chan net.Conn) {
	hostEnds := make(chan net.Conn, 4)
	return func(context.Context, uint32) (net.Conn, error) {
		ours, theirs := net.Pipe()
		t.Cleanup(func() { theirs.Close() })
		hostEnds <- theirs
		return ours, nil
	}, hostEnds
}

func TestGuestConnectsToListener(t *testing.T) {
	r := newRig(t, Options{})
	r.postRx(16)
	l := listen(t, r, 1234)
	r.connect(t, 5000, 1234)
	c := accept(t, l)
	assert.Equal(t, "2:1234", l.Addr().String())

	// Guest to host.
	r.send(t, hdr(OpRW, 5000, 1234), []byte("hello"))
	got := make([]byte, 5)
	_, err := io.ReadFull(c, got)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))

	// Host to guest: the header carries the device's credit.
	go c.Write([]byte("world"))
	h, data := r.recv(t)
	assert.LessOrEqual(t, h.FwdCnt, uint32(5), "fwd_cnt counts what reached the host")
	h.FwdCnt = 0 // the writer counts "hello" once its write returns, which may be after the host read it
	assert.Equal(t, Header{SrcCID: HostCID, DstCID: guestCID, SrcPort: 1234, DstPort: 5000, Len: 5, Type: TypeStream,
		Op: OpRW, BufAlloc: BufAlloc}, h)
	assert.Equal(t, "world", string(data))

	// The guest closes: the device answers RST and the host reads EOF.
	r.send(t, Header{SrcCID: guestCID, DstCID: HostCID, SrcPort: 5000, DstPort: 1234, Type: TypeStream,
		Op: OpShutdown, Flags: ShutdownRecv | ShutdownSend}, nil)
	h, _ = r.recv(t)
	assert.Equal(t, OpRST, h.Op)
	_, err = c.Read(got)
	assert.ErrorIs(t, err, io.EOF)
	assert.Zero(t, r.d.Stats().Conns)
	assert.Zero(t, r.logs.Count("level="), "nothing to complain about")
}

func TestHostConnects(t *testing.T) {
	r := newRig(t, Options{})
	r.postRx(16)
	ours, theirs := net.Pipe()
	defer theirs.Close()
	type result struct {
		port uint32
		err  error
	}
	done := make(chan result, 1)
	go func() {
		p, err := r.d.Connect(context.Background(), ours, 52, nil)
		done <- result{p, err}
	}()
	h, _ := r.recv(t)
	require.Equal(t, OpRequest, h.Op)
	assert.Equal(t, uint32(52), h.DstPort)
	assert.GreaterOrEqual(t, h.SrcPort, uint32(firstLocalPort))
	r.send(t, hdr(OpResponse, 52, h.SrcPort), nil)
	res := <-done
	require.NoError(t, res.err)
	assert.Equal(t, h.SrcPort, res.port)

	go theirs.Write([]byte("ping"))
	rw, data := r.recv(t)
	assert.Equal(t, OpRW, rw.Op)
	assert.Equal(t, "ping", string(data))
	r.send(t, hdr(OpRW, 52, res.port), []byte("pong"))
	got := make([]byte, 4)
	_, err := io.ReadFull(theirs, got)
	require.NoError(t, err)
	assert.Equal(t, "pong", string(got))

	// The host closes: the guest is told the host sends no more.
	theirs.Close()
	sh, _ := r.recv(t)
	assert.Equal(t, OpShutdown, sh.Op)
	assert.Equal(t, uint32(ShutdownSend), sh.Flags)
}

func TestHostConnectRefused(t *testing.T) {
	tests := []struct {
		name  string
		guest func(r *rig, req Header)
		want  error
	}{
		{"RST", func(r *rig, req Header) { r.sendAsync(hdr(OpRST, req.DstPort, req.SrcPort), nil) }, ErrRefused},
		{"no answer", func(*rig, Header) {}, ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, Options{})
			r.postRx(16)
			ours, theirs := net.Pipe()
			errc := make(chan error, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			go func() {
				_, err := r.d.Connect(ctx, ours, 52, nil)
				errc <- err
			}()
			req, _ := r.recv(t)
			tt.guest(r, req)
			err := <-errc
			if tt.want == ErrTimeout {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				h, _ := r.recv(t)
				assert.Equal(t, OpRST, h.Op, "an abandoned request is reset")
			} else {
				assert.ErrorIs(t, err, tt.want)
			}
			_, err = theirs.Read(make([]byte, 1))
			assert.ErrorIs(t, err, io.EOF, "the host side is closed")
			assert.Zero(t, r.d.Stats().Conns)
		})
	}
}

func TestConnectBeforeDriver(t *testing.T) {
	d, err := New(Options{CID: guestCID})
	require.NoError(t, err)
	ours, theirs := net.Pipe()
	defer theirs.Close()
	_, err = d.Connect(context.Background(), ours, 1, nil)
	assert.ErrorIs(t, err, ErrNotReady)
	assert.ErrorIs(t, d.ResetTransport(), ErrNotReady)
}

func TestListenPortInUse(t *testing.T) {
	d, err := New(Options{CID: guestCID})
	require.NoError(t, err)
	l, err := d.Listen(9)
	require.NoError(t, err)
	_, err = d.Listen(9)
	assert.ErrorIs(t, err, ErrPortInUse)
	require.NoError(t, l.Close())
	_, err = l.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
	l2, err := d.Listen(9)
	require.NoError(t, err, "a closed listener frees its port")
	l2.Close()
}

// TestMalformedAndStrayPackets sends packets no connection expects: each
// is answered RST, or dropped when an answer is impossible or would be
// to an RST, and the device keeps serving.
func TestMalformedAndStrayPackets(t *testing.T) {
	good := hdr(OpRW, 7, 8)
	raw := func(h Header) []byte {
		b := make([]byte, HeaderSize)
		h.Put(b)
		return b
	}
	with := func(f func(*Header)) Header {
		h := good
		f(&h)
		return h
	}
	tests := []struct {
		name  string
		bufs  []virtiotest.Buf
		reset bool
	}{
		{"RW to no connection", []virtiotest.Buf{{Data: raw(with(func(h *Header) { h.Len = 3 }))}, {Data: []byte("abc")}}, true},
		{"RESPONSE to no connection", []virtiotest.Buf{{Data: raw(with(func(h *Header) { h.Op = OpResponse }))}}, true},
		{"unknown op", []virtiotest.Buf{{Data: raw(with(func(h *Header) { h.Op = 99 }))}}, true},
		{"seqpacket request", []virtiotest.Buf{{Data: raw(with(func(h *Header) { h.Op, h.Type = OpRequest, 2 }))}}, true},
		{"request to another VM", []virtiotest.Buf{{Data: raw(with(func(h *Header) { h.Op, h.DstCID = OpRequest, 5 }))}}, true},
		{"len past the chain", []virtiotest.Buf{{Data: raw(with(func(h *Header) { h.Len = 100 }))}, {Data: []byte("abc")}}, true},
		{"len past buf_alloc", []virtiotest.Buf{{Data: raw(with(func(h *Header) { h.Len = BufAlloc + 1 }))}}, true},
		{"RST to no connection", []virtiotest.Buf{{Data: raw(with(func(h *Header) { h.Op = OpRST }))}}, false},
		{"spoofed source CID", []virtiotest.Buf{{Data: raw(with(func(h *Header) { h.Op, h.SrcCID = OpRequest, 4 }))}}, false},
		{"short header", []virtiotest.Buf{{Data: make([]byte, HeaderSize-1)}}, false},
		{"writable buffer", []virtiotest.Buf{{Data: raw(good)}, {Len: 64, Write: true}}, false},
	}
	r := newRig(t, Options{})
	r.postRx(64)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.awaitTx(t, r.sendRaw(tt.bufs))
			if !tt.reset {
				r.expectQuiet(t)
				return
			}
			h, _ := r.recv(t)
			assert.Equal(t, OpRST, h.Op)
			assert.Equal(t, uint32(8), h.SrcPort)
			assert.Equal(t, uint32(7), h.DstPort)
		})
	}
	// Still serving.
	r.send(t, hdr(OpRequest, 1, 2), nil)
	h, _ := r.recv(t)
	assert.Equal(t, OpRST, h.Op)
	// Dropped: the four the parser refused and the spoofed one.
	st := r.d.Stats()
	assert.Equal(t, uint64(5), st.Dropped)
	assert.Equal(t, uint64(len(tests)+1), st.TxPackets)
}

// TestGuestOverrunsCredit: a driver that sends more than the device's
// buf_alloc while the host does not read loses its connection, and the
// device holds no more than buf_alloc.
func TestGuestOverrunsCredit(t *testing.T) {
	dial, hostEnds := pipeDial(t)
	r := newRig(t, Options{Dial: dial})
	r.postRx(16)
	r.connect(t, 9, 80)
	c := <-hostEnds // not read until the end
	chunk := bytes.Repeat([]byte{'x'}, 16<<10)
	for range BufAlloc / len(chunk) {
		r.send(t, hdr(OpRW, 9, 80), chunk)
	}
	r.expectQuiet(t)
	r.send(t, hdr(OpRW, 9, 80), []byte{1})
	h, _ := r.recv(t)
	assert.Equal(t, OpRST, h.Op)
	assert.Equal(t, uint64(1), r.d.Stats().CreditAbuse)
	assert.Equal(t, 1, r.logs.Count("past its credit"))
	c.SetReadDeadline(time.Now().Add(waitFor))
	_, err := io.ReadAll(c)
	assert.NoError(t, err, "the host side ends with EOF")
}

// TestGuestStopsReading: the device sends no more than the guest's
// buf_alloc until the guest's fwd_cnt moves, whatever the host writes,
// and asks for credit once per stall.
func TestGuestStopsReading(t *testing.T) {
	dial, hostEnds := pipeDial(t)
	r := newRig(t, Options{Dial: dial})
	r.postRx(64)
	req := hdr(OpRequest, 9, 80)
	req.BufAlloc = 8192
	r.send(t, req, nil)
	h, _ := r.recv(t)
	require.Equal(t, OpResponse, h.Op)
	c := <-hostEnds
	payload := make([]byte, 64<<10)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		wrote <- err
	}()
	var got []byte
	for len(got) < 8192 {
		h, data := r.recv(t)
		require.Equal(t, OpRW, h.Op)
		got = append(got, data...)
	}
	assert.Len(t, got, 8192)
	// Out of credit, the device asks once; an answer that frees nothing
	// does not make it ask again.
	h, _ = r.recv(t)
	assert.Equal(t, OpCreditRequest, h.Op)
	same := hdr(OpCreditUpdate, 9, 80)
	same.BufAlloc = 8192
	r.send(t, same, nil)
	r.expectQuiet(t)
	select {
	case <-wrote:
		t.Fatal("the host's write finished with the guest holding 8 KiB of credit")
	default:
	}

	// The guest reads it all and says so; the rest flows.
	credit := hdr(OpCreditUpdate, 9, 80)
	stalls, asked := 0, 0
	for len(got) < len(payload) {
		credit.BufAlloc, credit.FwdCnt = 8192, uint32(len(got))
		r.send(t, credit, nil)
		stalls++
		for target := len(got) + 8192; len(got) < target; {
			h, data := r.recv(t)
			if h.Op == OpCreditRequest { // the previous stall's
				asked++
				continue
			}
			require.Equal(t, OpRW, h.Op)
			got = append(got, data...)
		}
	}
	assert.Equal(t, payload, got)
	assert.LessOrEqual(t, asked, stalls, "at most one CREDIT_REQUEST per stall")
	require.NoError(t, <-wrote)
}

func TestCreditUpdates(t *testing.T) {
	r := newRig(t, Options{})
	r.postRx(16)
	l := listen(t, r, 80)
	r.connect(t, 9, 80)
	c := accept(t, l)

	r.send(t, hdr(OpCreditRequest, 9, 80), nil)
	h, _ := r.recv(t)
	assert.Equal(t, OpCreditUpdate, h.Op)
	assert.Equal(t, uint32(BufAlloc), h.BufAlloc)
	assert.Zero(t, h.FwdCnt)

	// Forwarding creditThreshold bytes to the host tells the guest unasked.
	go io.Copy(io.Discard, c)
	chunk := bytes.Repeat([]byte{'y'}, 16<<10)
	for range creditThreshold / len(chunk) {
		r.send(t, hdr(OpRW, 9, 80), chunk)
	}
	h, _ = r.recv(t)
	assert.Equal(t, OpCreditUpdate, h.Op)
	assert.Equal(t, uint32(creditThreshold), h.FwdCnt)
}

func TestConnectionLimit(t *testing.T) {
	r := newRig(t, Options{MaxConns: 4})
	r.postRx(16)
	listen(t, r, 80)
	for p := range uint32(4) {
		r.connect(t, 100+p, 80)
	}
	r.send(t, hdr(OpRequest, 200, 80), nil)
	h, _ := r.recv(t)
	assert.Equal(t, OpRST, h.Op)
	ours, theirs := net.Pipe()
	defer theirs.Close()
	_, err := r.d.Connect(context.Background(), ours, 1, nil)
	assert.ErrorIs(t, err, ErrTooManyConns)
	st := r.d.Stats()
	assert.Equal(t, 4, st.Conns)
	assert.Equal(t, uint64(4), st.Accepted)
	assert.Equal(t, uint64(1), st.Refused)
}

// TestReplyFlood: a driver that floods requests to closed ports without
// posting rx buffers stalls its tx queue once maxReplies wait; nothing
// grows, and all completes once it reads.
func TestReplyFlood(t *testing.T) {
	r := newRig(t, Options{})
	var heads []uint16
	stalled := false
	for round := 0; !stalled; round++ {
		require.Less(t, round, 2*maxReplies/txSlots+2, "the tx queue never stalled")
		for i := range txSlots {
			heads = append(heads, r.sendAsync(hdr(OpRequest, uint32(round*txSlots+i), 1), nil))
		}
		stalled = !r.txCompleted(heads[len(heads)-1], 500*time.Millisecond)
	}
	r.d.mu.Lock()
	assert.Len(t, r.d.replies, maxReplies)
	r.d.mu.Unlock()

	r.postRx(QueueSize)
	for range len(heads) {
		h, _ := r.recv(t)
		assert.Equal(t, OpRST, h.Op)
	}
	assert.True(t, r.txCompleted(heads[len(heads)-1], waitFor))
	r.expectQuiet(t)
}

func TestTransportReset(t *testing.T) {
	r := newRig(t, Options{})
	r.postRx(16)
	l := listen(t, r, 80)
	r.connect(t, 9, 80)
	c := accept(t, l)
	assert.ErrorIs(t, r.d.ResetTransport(), ErrNoEventBuf)

	ev := r.drv.Queues[EventQueue]
	ev.WriteDesc(ev.Desc, 0, virtiotest.Desc{Addr: evArea, Len: 8, Flags: queue.DescFlagWrite})
	require.NoError(t, r.mem.WriteAt(bytes.Repeat([]byte{0xff}, 8), evArea))
	ev.Publish(0)
	require.NoError(t, r.d.ResetTransport())
	assert.Equal(t, []virtiotest.Used{{ID: 0, Len: 4}}, ev.Used())
	id, err := r.mem.Uint32(memory.GuestAddress(evArea))
	require.NoError(t, err)
	assert.Equal(t, uint32(eventTransportReset), id)
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "connections end")
	assert.Zero(t, r.d.Stats().Conns)
	r.expectQuiet(t) // the driver drops its sockets itself: no RSTs
}

func TestDriverResetClosesConnections(t *testing.T) {
	r := newRig(t, Options{})
	r.postRx(16)
	l := listen(t, r, 80)
	r.connect(t, 9, 80)
	c := accept(t, l)
	r.drv.SetStatus(0)
	_, err := c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF)
	assert.Zero(t, r.d.Stats().Conns)
	_, err = r.d.Listen(80)
	assert.ErrorIs(t, err, ErrPortInUse, "listeners outlive the driver")
}

func TestGuestConnectsThroughDial(t *testing.T) {
	hostEnd := make(chan net.Conn, 1)
	dial := func(_ context.Context, port uint32) (net.Conn, error) {
		if port != 7 {
			return nil, errors.New("nothing there")
		}
		ours, theirs := net.Pipe()
		hostEnd <- theirs
		return ours, nil
	}
	r := newRig(t, Options{Dial: dial})
	r.postRx(16)
	r.send(t, hdr(OpRequest, 40, 8), nil)
	h, _ := r.recv(t)
	assert.Equal(t, OpRST, h.Op, "no host service on port 8")

	r.connect(t, 40, 7)
	c := <-hostEnd
	defer c.Close()
	r.send(t, hdr(OpRW, 40, 7), []byte("hi"))
	got := make([]byte, 2)
	_, err := io.ReadFull(c, got)
	require.NoError(t, err)
	assert.Equal(t, "hi", string(got))
}

func TestRxBufferTooSmall(t *testing.T) {
	r := newRig(t, Options{})
	q := r.drv.Queues[RxQueue]
	q.WriteDesc(q.Desc, 0, virtiotest.Desc{Addr: rxArea, Len: HeaderSize - 1, Flags: queue.DescFlagWrite})
	q.Publish(0)
	r.send(t, hdr(OpRequest, 1, 2), nil)
	deadline := time.Now().Add(waitFor)
	for r.drv.Status()&0x40 == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	assert.NotZero(t, r.drv.Status()&0x40, "NEEDS_RESET")
}

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{SrcCID: 1, DstCID: 2, SrcPort: 3, DstPort: 4, Len: 5, Type: 6, Op: 7, Flags: 8, BufAlloc: 9, FwdCnt: 10}
	b := make([]byte, HeaderSize)
	h.Put(b)
	assert.Equal(t, uint32(9), binary.LittleEndian.Uint32(b[36:]))
	got, err := ParseHeader(b)
	require.NoError(t, err)
	assert.Equal(t, h, got)
	_, err = ParseHeader(b[:HeaderSize-1])
	assert.ErrorIs(t, err, ErrShortHeader)
	assert.Equal(t, "CREDIT_REQUEST", OpCreditRequest.String())
	assert.Equal(t, "Op(99)", Op(99).String())
}
