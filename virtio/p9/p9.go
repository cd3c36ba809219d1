// Package p9 is a virtio-9p device: a host folder served to the guest's
// 9pnet_virtio driver over 9P2000.L. Each request is one descriptor chain,
// a device-readable T-message and device-writable room for the R-message.
// ParseRequest checks every message before the 9P server
// (github.com/hugelgupf/p9) sees it; the server runs each request on its
// own goroutine, at most MaxInFlight at once, over the confined file
// system of package hostfs, so a slow host file system stalls neither the
// vCPUs nor the other requests. Reads and writes of open files are the
// exception: the device moves their data itself (see readDirect).
package p9

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	p9srv "github.com/hugelgupf/p9/p9"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/ratelog"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/p9/hostfs"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// Limits.
const (
	// QueueSize is the kernel's VIRTQUEUE_NUM for 9p.
	QueueSize = 128
	// MaxMessageSize caps the msize a guest negotiates: 512 KiB, what
	// 9pnet_virtio can post in one chain, and the largest buffer the
	// server allocates for one request.
	MaxMessageSize = 512 << 10
	// MaxInFlight bounds the requests the server works on at once, and
	// so its goroutines and buffers.
	MaxInFlight = 16
	// MaxTagLen bounds the mount tag.
	MaxTagLen = 64
)

// FeatureMountTag says the configuration holds the mount tag (spec 5.14).
const FeatureMountTag = 1 << 0

// Errors of New.
var ErrInvalidTag = errors.New("mount tag must be 1 to 64 letters, digits, '.', '_' or '-'")

// errServerStopped means the 9P server ended its session by itself: the
// device needs a reset.
var errServerStopped = errors.New("virtio-9p: the 9P server stopped")

// Options configure a share.
type Options struct {
	Tag      string
	ReadOnly bool
	SetID    bool // see hostfs.Options
	Log      *slog.Logger
}

// Device is a virtio-9p device serving one host folder.
type Device struct {
	share  *hostfs.Share
	server *p9srv.Server
	tag    string
	config []byte
	log    *slog.Logger
	glog   *ratelog.Logger // for bad requests: a guest can send them without end

	// Set by Activate before the worker starts, cleared by Reset after it
	// stopped (the virtio.Device contract).
	mem  *memory.Memory
	q    *queue.Queue
	sess *session

	qmu sync.Mutex // the queue: popped by Process, pushed on completion

	// gate is held for reading by every request from its pop to its
	// answer, and for writing by Quiesce: nothing is in flight then.
	gate     sync.RWMutex
	quiesced atomic.Bool
	// restored is the state Restore loaded, which the next Activate
	// brings back into the new session.
	restored *State
}

var _ virtio.Device = (*Device)(nil)

// ValidTag reports whether tag can be a mount tag.
func ValidTag(tag string) error {
	if tag == "" || len(tag) > MaxTagLen {
		return ErrInvalidTag
	}
	for _, c := range tag {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return ErrInvalidTag
		}
	}
	return nil
}

// New opens the folder dir as a share with the given mount tag.
func New(dir string, opts Options) (*Device, error) {
	if err := ValidTag(opts.Tag); err != nil {
		return nil, fmt.Errorf("share %s: tag %q: %w", dir, opts.Tag, err)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	share, err := hostfs.Open(dir, hostfs.Options{ReadOnly: opts.ReadOnly, SetID: opts.SetID})
	if err != nil {
		return nil, err
	}
	d := &Device{share: share, server: p9srv.NewServer(share), tag: opts.Tag, log: log.With("share", opts.Tag)}
	d.glog = ratelog.New(d.log)
	// struct virtio_9p_config: tag_len[2] and the tag, not NUL-terminated.
	d.config = binary.LittleEndian.AppendUint16(nil, uint16(len(opts.Tag)))
	d.config = append(d.config, opts.Tag...)
	return d, nil
}

// Close releases the folder. Call it after the device was reset or the
// machine stopped.
func (d *Device) Close() error { return d.share.Close() }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.Device9P }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return FeatureMountTag }

// QueueMaxSizes implements virtio.Device: one request queue.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, data []byte) { virtio.ReadConfigBytes(d.config, off, data) }

// WriteConfig implements virtio.Device: nothing is writable.
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device: a new 9P session.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) == 0 || a.Queues[0] == nil {
		return errors.New("virtio-9p: request queue not enabled")
	}
	d.mem, d.q = a.Mem, a.Queues[0]
	d.sess = newSession(d)
	go d.sess.serve(d.server)
	if st := d.restored; st != nil {
		d.restored = nil
		if err := d.replay(st); err != nil {
			d.sess.end()
			d.mem, d.q, d.sess = nil, nil, nil
			return err
		}
	}
	return nil
}

// Reset implements virtio.Device: ends the session, which closes every
// fid once the requests in progress are done.
func (d *Device) Reset() {
	if d.sess != nil {
		d.sess.end()
	}
	d.mem, d.q, d.sess, d.restored = nil, nil, nil, nil
}

// Process implements virtio.Device: hands every available request to the
// server, waiting while MaxInFlight are in progress.
func (d *Device) Process(ctx context.Context, _ int) error {
	s := d.sess
	// Stop waiting for room if the server's session ends.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	var c queue.Chain
	for {
		d.gate.RLock() // waits while the device is quiesced
		if err := s.slots.Acquire(ctx, 1); err != nil {
			d.gate.RUnlock()
			if s.ctx.Err() != nil {
				return errServerStopped
			}
			return nil
		}
		d.qmu.Lock()
		ok, err := d.q.Pop(&c)
		d.qmu.Unlock()
		if err != nil || !ok {
			s.slots.Release(1)
			d.gate.RUnlock()
			return err
		}
		if err := d.dispatch(ctx, &c); err != nil {
			return err
		}
	}
}

// dispatch starts one popped request, holding one slot and the gate's
// read lock. A request the server must not see is answered at once.
func (d *Device) dispatch(ctx context.Context, c *queue.Chain) error {
	s := d.sess
	msize := s.msize.Load()
	msg, err := d.gather(c.Readable, msize)
	var req Request
	if err == nil {
		req, err = ParseRequest(msg, msize, MaxMessageSize)
	}
	p := &pending{head: c.Head, tag: req.Tag, writable: append([]queue.Buffer(nil), c.Writable...), slots: 1,
		isFlush: req.Type == msgTflush, gated: true}
	if err == nil && changesFids[req.Type] {
		p.req = req.Msg
	}
	if err == nil && !s.track(req.Tag, p) {
		err = fmt.Errorf("9p: tag %d already in use", req.Tag)
	}
	if err != nil {
		d.glog.Warn("virtio-9p: bad request", "err", err)
		errno := uint32(unix.EINVAL)
		if errors.Is(err, ErrUnknownType) {
			errno = uint32(unix.EOPNOTSUPP)
		}
		if len(msg) < HeaderSize {
			// No tag to answer: return the chain empty.
			return s.complete(p, nil)
		}
		return s.complete(p, lerror(req.Tag, errno))
	}
	switch req.Type {
	case msgTflush:
		return s.flush(p, binary.LittleEndian.Uint16(req.Msg[HeaderSize:]))
	case msgTxattrwalk, msgTxattrcreate:
		// Extended attributes are not served. The server would turn
		// the file system's EOPNOTSUPP into EINVAL, which the guest
		// takes for a failure (execve, reading file capabilities).
		s.untrack(req.Tag)
		return s.complete(p, lerror(req.Tag, uint32(unix.EOPNOTSUPP)))
	case msgTattach, msgTwalk:
		if s.fidsFull(req) {
			s.untrack(req.Tag)
			return s.complete(p, lerror(req.Tag, uint32(unix.ENFILE)))
		}
	}
	if req.Type == msgTread && d.readDirect(p, req.Msg) || req.Type == msgTwrite && d.writeDirect(p, req.Msg) {
		return nil
	}
	if req.Type == msgTversion {
		// The server resets the session on Tversion and may change msize:
		// it runs alone, and nothing follows it until it is answered.
		if err := s.slots.Acquire(ctx, MaxInFlight-1); err != nil {
			s.untrack(req.Tag)
			s.slots.Release(1)
			d.gate.RUnlock()
			if s.ctx.Err() != nil {
				return errServerStopped
			}
			return nil
		}
		p.slots, p.version = MaxInFlight, true
	}
	s.msgs <- req.Msg // never blocks: at most MaxInFlight are queued
	return nil
}

// gather copies the chain's readable bytes, refusing more than msize.
func (d *Device) gather(bufs []queue.Buffer, msize uint32) ([]byte, error) {
	var total uint64
	for _, b := range bufs {
		total += uint64(b.Len)
	}
	if total > uint64(msize) {
		return nil, fmt.Errorf("%w: %d bytes, msize %d", ErrTooLarge, total, msize)
	}
	msg := make([]byte, total)
	off := 0
	for _, b := range bufs {
		if err := d.mem.ReadAt(msg[off:off+int(b.Len)], b.Addr); err != nil {
			return nil, err
		}
		off += int(b.Len)
	}
	return msg, nil
}

// pending is a request the server works on.
type pending struct {
	head      uint16
	tag       uint16
	flushers  []*pending // Tflush requests answered after this one
	isFlush   bool       // a Tflush, answered by the session itself
	writable  []queue.Buffer
	written   int    // bytes of the answer in writable
	direct    int    // bytes the device put in writable past them (readDirect)
	truncated bool   // the answer did not fit
	slots     int64  // held until the answer is pushed
	version   bool   // Tversion: its answer sets msize
	gated     bool   // holds the device's gate for reading until answered
	req       []byte // the T-message, kept when its answer changes the fids

	// A request the device makes itself (replay): its answer goes to
	// local, and done is closed once it is complete.
	local []byte
	done  chan struct{}
}

// write appends b to the answer in the writable buffers, as much as fits.
func (p *pending) write(mem *memory.Memory, b []byte) {
	if p.done != nil {
		p.local = append(p.local, b...)
		return
	}
	off := p.written
	for _, buf := range p.writable {
		if len(b) == 0 {
			return
		}
		if off >= int(buf.Len) {
			off -= int(buf.Len)
			continue
		}
		n := min(len(b), int(buf.Len)-off)
		if err := mem.WriteAt(b[:n], buf.Addr+memory.GuestAddress(off)); err != nil {
			break // the queue checked every buffer: cannot happen
		}
		b, off, p.written = b[n:], 0, p.written+n
	}
	p.truncated = p.truncated || len(b) > 0
}

// session is one 9P connection, from Activate to Reset: the server reads
// T-messages from it and writes R-messages to it.
type session struct {
	d      *Device
	ctx    context.Context // done when the server stopped
	cancel context.CancelFunc
	slots  *semaphore.Weighted
	msgs   chan []byte // validated T-messages, in order
	cur    []byte      // the rest of the message being read

	msize     atomic.Uint32 // negotiated: set by Rversion
	versioned atomic.Bool   // an Rversion granted an msize

	mu      sync.Mutex
	ended   bool // answers are dropped from then on
	pending map[uint16]*pending
	fids    fidTable

	// The answer being written, which the server sends one at a time:
	// its first bytes (Rversion's msize, Rlopen's QID), what is left,
	// and its request (nil when nobody waits for it).
	head  [HeaderSize + qidSize]byte
	headN int
	left  uint32
	resp  *pending
}

func newSession(d *Device) *session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		d: d, ctx: ctx, cancel: cancel,
		slots:   semaphore.NewWeighted(MaxInFlight),
		msgs:    make(chan []byte, MaxInFlight),
		pending: make(map[uint16]*pending),
		fids:    make(fidTable),
	}
	s.msize.Store(MaxMessageSize)
	return s
}

func (s *session) serve(srv *p9srv.Server) {
	defer s.cancel()
	if err := srv.Handle(s, s); err != nil {
		s.d.log.Error("virtio-9p: server", "err", err)
	}
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if !ended {
		s.d.log.Error("virtio-9p: the 9P server ended the session; the device needs a reset")
	}
}

// end stops the session and waits until the server answered or dropped
// every request in flight and closed every fid. Answers after this point
// are dropped.
func (s *session) end() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	close(s.msgs)
	<-s.ctx.Done()
	s.d.share.DropLoans()
}

func (s *session) track(tag uint16, p *pending) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.pending[tag]; dup {
		return false
	}
	s.pending[tag] = p
	return true
}

// fidsFull reports whether req, a Tattach or Twalk, would make a new fid
// past maxLiveFids: what the device keeps of each fid stays bounded, and
// every session can be saved (MaxFids). Requests in flight may each add
// one more.
func (s *session) fidsFull(req Request) bool {
	fid := binary.LittleEndian.Uint32(req.Msg[HeaderSize:]) // Tattach's fid
	if req.Type == msgTwalk {
		fid = binary.LittleEndian.Uint32(req.Msg[HeaderSize+4:]) // newfid
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, replaced := s.fids[fid]
	return !replaced && len(s.fids) >= maxLiveFids
}

func (s *session) untrack(tag uint16) {
	s.mu.Lock()
	delete(s.pending, tag)
	s.mu.Unlock()
}

// Read gives the server the T-messages, one after the other; EOF ends
// the session.
func (s *session) Read(b []byte) (int, error) {
	if len(s.cur) == 0 {
		msg, ok := <-s.msgs
		if !ok {
			return 0, io.EOF
		}
		s.cur = msg
	}
	n := copy(b, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

// Write takes the server's R-messages, which it writes one at a time
// (possibly in pieces), into the buffers of the request each answers.
func (s *session) Write(b []byte) (int, error) {
	total := len(b)
	for len(b) > 0 {
		if s.headN < HeaderSize {
			n := copy(s.head[s.headN:HeaderSize], b)
			s.headN += n
			b = b[n:]
			if s.headN == HeaderSize {
				s.begin()
			}
			continue
		}
		n := min(uint32(len(b)), s.left)
		if s.headN < len(s.head) {
			s.headN += copy(s.head[s.headN:], b[:n])
		}
		s.deliver(b[:n])
		b, s.left = b[n:], s.left-n
		if s.left == 0 {
			s.finish()
		}
	}
	return total, nil
}

// begin looks up the request the answer in head is for.
func (s *session) begin() {
	le := binary.LittleEndian
	size, tag := le.Uint32(s.head[:]), le.Uint16(s.head[5:])
	s.mu.Lock()
	p, ended := s.pending[tag], s.ended
	s.mu.Unlock()
	if p == nil && !ended {
		// ParseRequest admits only what the server decodes, so every
		// answer carries a tag we wait on.
		s.d.log.Error("virtio-9p: answer to a tag nobody waits for", "tag", tag)
	}
	s.resp = p
	s.deliver(s.head[:HeaderSize])
	s.left = max(size, HeaderSize) - HeaderSize
	if s.left == 0 {
		s.finish()
	}
}

// deliver copies part of the answer to its request's buffers.
func (s *session) deliver(b []byte) {
	if s.resp == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.resp.write(s.d.mem, b)
	}
}

// finish returns the answered chain to the driver.
func (s *session) finish() {
	p := s.resp
	if p != nil && p.version && s.headN >= HeaderSize+4 && s.head[4] == msgRversion {
		// Rversion's msize, 0 when the version was refused.
		if msize := binary.LittleEndian.Uint32(s.head[HeaderSize:]); msize != 0 {
			s.msize.Store(msize)
			s.versioned.Store(true)
		}
	}
	head := s.head[:s.headN]
	s.headN, s.resp = 0, nil
	if p != nil {
		s.answer(p, head, nil)
	}
}

// answer completes p with resp (nil when it is in p's buffers already),
// head being the answer's first bytes, and then the Tflush requests that
// waited for it.
func (s *session) answer(p *pending, head, resp []byte) {
	// The tag is free again for the guest once the answer is pushed. A
	// Tflush for it now finds it gone.
	s.mu.Lock()
	if p.req != nil {
		s.fids.answered(p.req, head)
	}
	delete(s.pending, p.tag)
	flushers := p.flushers
	s.mu.Unlock()
	if err := s.complete(p, resp); err != nil {
		s.d.glog.Warn("virtio-9p: completing a request", "err", err)
	}
	for _, f := range flushers {
		s.untrack(f.tag)
		if err := s.complete(f, rflush(f.tag)); err != nil {
			s.d.glog.Warn("virtio-9p: completing a flush", "err", err)
		}
	}
}

// flush answers Tflush p for oldTag here rather than in the server, whose
// Tflush waits for the old tag and so could wait for itself or for
// another Tflush: at once if the server is not working on oldTag,
// otherwise right after oldTag's answer, as the protocol requires.
func (s *session) flush(p *pending, oldTag uint16) error {
	s.mu.Lock()
	if old := s.pending[oldTag]; old != nil && !old.isFlush {
		old.flushers = append(old.flushers, p)
		s.mu.Unlock()
		return nil
	}
	delete(s.pending, p.tag)
	s.mu.Unlock()
	return s.complete(p, rflush(p.tag))
}

// complete writes resp into the chain's writable buffers, as much as
// fits, returns the chain to the driver unless the session ended, and
// frees the request's slots.
func (s *session) complete(p *pending, resp []byte) error {
	defer s.slots.Release(p.slots)
	if p.gated {
		defer s.d.gate.RUnlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.done != nil {
		p.write(nil, resp)
		close(p.done)
		return nil
	}
	if s.ended {
		return nil
	}
	if p.write(s.d.mem, resp); p.truncated {
		s.d.glog.Warn("virtio-9p: answer larger than the request's buffers; truncated", "written", p.written)
	}
	d := s.d
	d.qmu.Lock()
	defer d.qmu.Unlock()
	if err := d.q.Push(p.head, uint32(p.written+p.direct)); err != nil {
		return err
	}
	return d.q.SignalUsed()
}

// Close implements io.Closer for the server; the session ends in end.
func (s *session) Close() error { return nil }
