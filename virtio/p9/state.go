package p9

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/devices"
)

// MaxFids bounds the fids a restored state may hold: each one is opened
// again, and a forged state must not make the restore open without end.
// A guest rarely holds more than a few thousand; the device refuses its
// new fids past maxLiveFids.
const MaxFids = 1 << 16

// maxLiveFids is where a guest's new fids are refused (ENFILE): with
// the requests in flight, a session never holds more than MaxFids.
const maxLiveFids = MaxFids - MaxInFlight

// maxWalkNames is the most names one Twalk carries (MAXWELEM).
const maxWalkNames = 16

// State is the share's state, for snapshots: the 9P session's
// negotiated message size and every fid the guest holds, by path. Its
// queue is the transport's. Host descriptors are not saved: a restore
// walks each path again beneath the share's root and reopens it.
type State struct {
	Tag string
	// MessageSize is the msize the driver negotiated; 0 when it had
	// not sent Tversion yet, and then there are no fids.
	MessageSize uint32
	// RootQID identifies the folder (inode and device): a restore onto
	// the same folder checks that each open fid finds the same file.
	RootQID uint64
	Fids    []FidState
}

// FidState is one fid. Extended attribute fids do not exist (the device
// refuses Txattrwalk and Txattrcreate).
type FidState struct {
	Fid  uint32
	Path string // relative to the share's root, names joined by "/"; "" is the root
	Open bool
	// Flags are the guest's open flags (9P2000.L's, Linux's values);
	// a restore reopens without O_TRUNC, O_CREAT and O_EXCL.
	Flags uint32 `json:",omitempty"`
	Dir   bool   `json:",omitempty"` // opened as a folder
	QID   uint64 `json:",omitempty"` // the opened file's QID path
}

// Quiesce waits until no request is in flight and keeps the device from
// taking another until Release: its fids and its queue then agree with
// guest memory, as a snapshot needs (queue.Resume takes used.idx as the
// next chain to take, and 9P answers out of order).
func (d *Device) Quiesce() {
	d.gate.Lock()
	d.quiesced.Store(true)
}

// Release lets a quiesced device take requests again; on a device not
// quiesced it does nothing.
func (d *Device) Release() {
	if d.quiesced.CompareAndSwap(true, false) {
		d.gate.Unlock()
	}
}

// State returns the share's state. Take it quiesced. A guest holding
// more than MaxFids fids is refused. Fids whose file the
// guest removed or renamed over, or whose path is longer than PATH_MAX,
// are left out, and logged: after a restore the guest's fid is unknown,
// and using it fails with EBADF.
func (d *Device) State() (State, error) {
	root, err := d.share.RootQID()
	if err != nil {
		return State{}, err
	}
	st := State{Tag: d.tag, RootQID: root}
	s := d.sess
	if s == nil {
		return st, nil
	}
	if !s.versioned.Load() {
		// No Tversion yet: the driver has not started a session, and
		// a restore has no msize to start one with.
		return st, nil
	}
	st.MessageSize = s.msize.Load()
	s.mu.Lock()
	if n := len(s.fids); n > MaxFids {
		s.mu.Unlock()
		return State{}, fmt.Errorf("virtio-9p %s: the guest holds %d fids, a snapshot saves at most %d", d.tag, n, MaxFids)
	}
	var lost []string
	for fid, r := range s.fids {
		if r.lost {
			lost = append(lost, r.path)
			continue
		}
		st.Fids = append(st.Fids, FidState{Fid: fid, Path: r.path, Open: r.open, Flags: r.flags, Dir: r.dir, QID: r.qid})
	}
	s.mu.Unlock()
	slices.SortFunc(st.Fids, func(a, b FidState) int { return cmp.Compare(a.Fid, b.Fid) })
	if len(lost) > 0 {
		d.log.Warn("virtio-9p: snapshot leaves out fids whose file was removed or replaced; the guest's use of them fails after a restore",
			"count", len(lost), "paths", firstFew(lost))
	}
	return st, nil
}

func firstFew(paths []string) []string {
	slices.Sort(paths)
	return paths[:min(len(paths), 8)]
}

// Restore loads s into a device just built for the same share, before
// its transport is restored: the transport's activation opens the
// session again and brings the fids back. s is untrusted: a tag other
// than the device's, an msize outside the bounds, too many fids, a fid
// twice, or a path that is absolute, holds "." or "..", an empty name
// or a NUL, is refused with devices.ErrBadState.
func (d *Device) Restore(s State) error {
	if err := d.validState(s); err != nil {
		return fmt.Errorf("virtio-9p %s: %w: %w", d.tag, devices.ErrBadState, err)
	}
	d.restored = &s
	return nil
}

func (d *Device) validState(s State) error {
	switch {
	case s.Tag != d.tag:
		return fmt.Errorf("tag %q, the share's is %q", s.Tag, d.tag)
	case s.MessageSize == 0 && len(s.Fids) > 0:
		return fmt.Errorf("%d fids without a negotiated msize", len(s.Fids))
	case s.MessageSize != 0 && (s.MessageSize <= rreadHeader || s.MessageSize > MaxMessageSize):
		return fmt.Errorf("msize %d", s.MessageSize)
	case len(s.Fids) > MaxFids:
		return fmt.Errorf("%d fids: at most %d", len(s.Fids), MaxFids)
	}
	seen := make(map[uint32]bool, len(s.Fids))
	for _, f := range s.Fids {
		if f.Fid == noFid || seen[f.Fid] {
			return fmt.Errorf("fid %d twice, or NOFID", f.Fid)
		}
		seen[f.Fid] = true
		if err := validPath(f.Path); err != nil {
			return fmt.Errorf("fid %d: path %q: %w", f.Fid, f.Path, err)
		}
	}
	return nil
}

// validPath admits what the live server walks: names below the root,
// each one plain, within PATH_MAX.
func validPath(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > maxPathLen {
		return fmt.Errorf("longer than %d bytes", maxPathLen)
	}
	for n := range strings.SplitSeq(p, "/") {
		if n == "" || n == "." || n == ".." || len(n) > unix.NAME_MAX || strings.IndexByte(n, 0) >= 0 {
			return fmt.Errorf("name %q: want a plain name below the share's root", n)
		}
	}
	return nil
}

// replay brings the state's fids back into the new session, through the
// server as the guest's own requests would: Tversion with the saved
// msize, then for each fid Tattach, Twalk along its path (one openat2
// per name, beneath the root, never through a symlink: the live rules)
// and Tlopen with its flags. A fid that cannot be brought back (its file
// was removed or renamed on the host, replaced by another, or a symlink
// is in the way) is clunked: the guest's later use of it fails with
// EBADF, as its use of a file removed under it would, and the restore
// goes on. An msize the server no longer grants fails the restore.
func (d *Device) replay(st *State) error {
	if st.MessageSize == 0 {
		return nil
	}
	s := d.sess
	var b builder
	resp, err := s.call(b.start(msgTversion, noTag).u32(st.MessageSize).str(dotL).end())
	if err != nil {
		return err
	}
	if len(resp) < HeaderSize+4 || resp[4] != msgRversion || binary.LittleEndian.Uint32(resp[HeaderSize:]) != st.MessageSize {
		return fmt.Errorf("virtio-9p %s: restoring msize %d: the server does not grant it", d.tag, st.MessageSize)
	}
	root, err := d.share.RootQID()
	if err != nil {
		return err
	}
	same := root == st.RootQID
	var lost []string
	for _, f := range st.Fids {
		if err := d.reopen(f, same); err != nil {
			lost = append(lost, fmt.Sprintf("%s: %v", f.Path, err))
			if _, err := s.call(b.start(msgTclunk, 0).u32(f.Fid).end()); err != nil {
				return err
			}
		}
	}
	if len(lost) > 0 {
		d.log.Warn("virtio-9p: fids not restored; the guest's use of them fails with EBADF",
			"count", len(lost), "fids", firstFew(lost))
	}
	return nil
}

// reopen brings back one fid. same says the share is the folder the
// snapshot was taken of, where an open file must be the same inode.
func (d *Device) reopen(f FidState, same bool) error {
	s := d.sess
	var b builder
	if err := s.expect(b.start(msgTattach, 0).u32(f.Fid).u32(noFid).str("").str("").u32(noFid).end()); err != nil {
		return err
	}
	var names []string
	if f.Path != "" {
		names = strings.Split(f.Path, "/")
	}
	msize := s.msize.Load()
	for len(names) > 0 {
		b.start(msgTwalk, 0).u32(f.Fid).u32(f.Fid)
		n := 0
		size := len(b) + 2
		for n < len(names) && n < maxWalkNames && size+2+len(names[n]) <= int(msize) {
			size += 2 + len(names[n])
			n++
		}
		if n == 0 {
			return fmt.Errorf("name %q does not fit msize %d", names[0], msize)
		}
		b.u16(uint16(n))
		for _, name := range names[:n] {
			b.str(name)
		}
		if err := s.expect(b.end()); err != nil {
			return err
		}
		names = names[n:]
	}
	if !f.Open {
		return nil
	}
	flags := f.Flags &^ (unix.O_TRUNC | unix.O_CREAT | unix.O_EXCL)
	resp, err := s.call(b.start(msgTlopen, 0).u32(f.Fid).u32(flags).end())
	if err != nil {
		return err
	}
	if err := answerError(msgTlopen, resp); err != nil {
		return err
	}
	dir, qid := openedQID(resp)
	switch {
	case dir != f.Dir:
		return fmt.Errorf("a folder became a file or the other way round")
	case same && qid != f.QID:
		return fmt.Errorf("replaced by another file")
	}
	return nil
}

// expect sends msg and turns an Rlerror into an error.
func (s *session) expect(msg []byte) error {
	resp, err := s.call(msg)
	if err != nil {
		return err
	}
	return answerError(msg[4], resp)
}

func answerError(typ uint8, resp []byte) error {
	switch {
	case len(resp) >= HeaderSize && resp[4] == typ+1:
		return nil
	case len(resp) >= HeaderSize+4 && resp[4] == msgRlerror:
		return unix.Errno(binary.LittleEndian.Uint32(resp[HeaderSize:]))
	}
	return fmt.Errorf("unexpected answer to a request of type %d", typ)
}

// call sends msg, a request the device makes itself, to the server on
// this session and returns the answer. It runs before the queue's worker
// starts: nothing else is in flight.
func (s *session) call(msg []byte) ([]byte, error) {
	req, err := ParseRequest(msg, s.msize.Load(), MaxMessageSize)
	if err != nil {
		return nil, err
	}
	p := &pending{tag: req.Tag, slots: 1, done: make(chan struct{}), version: req.Type == msgTversion}
	if p.version {
		p.slots = MaxInFlight
	}
	if changesFids[req.Type] {
		p.req = req.Msg
	}
	if err := s.slots.Acquire(s.ctx, p.slots); err != nil {
		return nil, err
	}
	if !s.track(req.Tag, p) {
		s.slots.Release(p.slots)
		return nil, fmt.Errorf("9p: tag %d already in use", req.Tag)
	}
	s.msgs <- req.Msg
	select {
	case <-p.done:
		return p.local, nil
	case <-s.ctx.Done():
		return nil, errServerStopped
	}
}

// builder encodes a T-message.
type builder []byte

func (b *builder) start(typ uint8, tag uint16) *builder {
	*b = append((*b)[:0], 0, 0, 0, 0, typ, byte(tag), byte(tag>>8))
	return b
}

func (b *builder) u16(v uint16) *builder {
	*b = binary.LittleEndian.AppendUint16(*b, v)
	return b
}

func (b *builder) u32(v uint32) *builder {
	*b = binary.LittleEndian.AppendUint32(*b, v)
	return b
}

func (b *builder) str(v string) *builder {
	return b.u16(uint16(len(v))).append(v)
}

func (b *builder) append(v string) *builder {
	*b = append(*b, v...)
	return b
}

// end sets the size field and returns a copy of the message: the server
// reads it while the builder makes the next one.
func (b *builder) end() []byte {
	binary.LittleEndian.PutUint32(*b, uint32(len(*b)))
	return slices.Clone(*b)
}
