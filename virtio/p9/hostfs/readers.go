package hostfs

import (
	"sync"

	"golang.org/x/sys/unix"
)

// readers lends descriptors of the share's open regular files, by QID
// path, so that the device can answer a read straight from the file into
// guest memory instead of through the 9P server's buffers. Each open
// File readable without O_DIRECT (whose alignment rules guest buffers
// need not follow) lends its inode a descriptor; the inode's entry lives
// while one such File is open, so its QID path names that inode alone.
type readers struct {
	mu sync.Mutex
	m  map[uint64]*reader
}

type reader struct {
	fd       int // a duplicate, owned by the entry
	dev, ino uint64
	opens    int // open Files that lent it
	borrows  int // reads using fd now
	// ambiguous: another open inode has the same QID path (inode numbers
	// past 48 bits on another device): reads go through the server.
	ambiguous bool
}

// lend registers an open File's descriptor fd of inode ino on device dev
// for reads by QID path. It reports whether it did: the File must give
// it back.
func (r *readers) lend(fd int, dev, ino uint64) bool {
	key := qidPath(dev, ino)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.m[key]; e != nil {
		e.opens++
		if e.dev != dev || e.ino != ino {
			e.ambiguous = true
		}
		return true
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return false // reads go through the server
	}
	if r.m == nil {
		r.m = make(map[uint64]*reader)
	}
	r.m[key] = &reader{fd: dup, dev: dev, ino: ino, opens: 1}
	return true
}

// giveBack undoes one lend of inode ino on device dev.
func (r *readers) giveBack(dev, ino uint64) {
	key := qidPath(dev, ino)
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.m[key]
	if e == nil {
		return
	}
	if e.opens--; e.opens == 0 {
		delete(r.m, key)
		if e.borrows == 0 {
			unix.Close(e.fd)
		}
	}
}

// borrow returns the descriptor lent for qid, to be returned with
// release.
func (r *readers) borrow(qid uint64) (*reader, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.m[qid]
	if e == nil || e.ambiguous {
		return nil, false
	}
	e.borrows++
	return e, true
}

func (r *readers) release(e *reader) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.borrows--; e.borrows == 0 && e.opens == 0 {
		unix.Close(e.fd)
	}
}

// Reader returns a descriptor of the open regular file whose QID path is
// qid, for pread-style calls until release is called. It reports false
// when no File of the share holds that file open for reading without
// O_DIRECT: its reads are then the server's.
func (s *Share) Reader(qid uint64) (fd int, release func(), ok bool) {
	e, ok := s.readers.borrow(qid)
	if !ok {
		return -1, nil, false
	}
	return e.fd, func() { s.readers.release(e) }, true
}

// DropReaders closes every lent descriptor once the server's session
// ended: its Files were all closed then, or, when the 9P library's
// connection end raced (see package p9), left to the garbage collector,
// which would never give their loans back. A File closed later gives
// back nothing, or at worst ends a later loan of its inode early, after
// which reads of that inode go through the server.
func (s *Share) DropReaders() {
	r := &s.readers
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, e := range r.m {
		delete(r.m, key)
		e.opens = 0
		if e.borrows == 0 {
			unix.Close(e.fd)
		}
	}
}
