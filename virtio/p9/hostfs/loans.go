package hostfs

import (
	"sync"

	"golang.org/x/sys/unix"
)

// loans lends descriptors of the share's open regular files, by QID path,
// so that the device can move a read's or a write's data straight between
// the file and guest memory instead of through the 9P server's buffers.
// Each open File without O_DIRECT (whose alignment rules guest buffers
// need not follow) lends its inode a descriptor for reads if it can read,
// and one for writes if it can write. A write loan is per set of the
// flags that change what a write does (writeFlags), which the lent
// descriptor's open file description carries. An entry lives while one
// of its lenders is open, so its QID path names that inode alone.
type loans struct {
	mu sync.Mutex
	m  map[loanKey]*loan
}

// writeFlags are the open flags a write loan must match: they decide
// where the data goes and when the write returns.
const writeFlags = unix.O_APPEND | unix.O_DSYNC | unix.O_SYNC

type loanKey struct {
	qid   uint64
	write bool
	flags int // the lender's writeFlags, for a write loan
}

type loan struct {
	fd       int // a duplicate, owned by the entry
	dev, ino uint64
	opens    int // open Files that lent it
	borrows  int // transfers using fd now
	// ambiguous: another open inode has the same QID path (inode numbers
	// past 48 bits on another device): its transfers go through the
	// server.
	ambiguous bool
}

// lend registers an open File's descriptor fd of inode ino on device dev
// under key. It reports whether it did: the File must give it back.
func (l *loans) lend(key loanKey, fd int, dev, ino uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[key]; e != nil {
		e.opens++
		if e.dev != dev || e.ino != ino {
			e.ambiguous = true
		}
		return true
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return false // transfers go through the server
	}
	if l.m == nil {
		l.m = make(map[loanKey]*loan)
	}
	l.m[key] = &loan{fd: dup, dev: dev, ino: ino, opens: 1}
	return true
}

// giveBack undoes one lend under key.
func (l *loans) giveBack(key loanKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[key]
	if e == nil {
		return
	}
	if e.opens--; e.opens == 0 {
		delete(l.m, key)
		e.closeIfUnused()
	}
}

// closeIfUnused closes the descriptor once no File lends it and no
// transfer uses it. The caller holds the loans' lock.
func (e *loan) closeIfUnused() {
	if e.opens == 0 && e.borrows == 0 {
		unix.Close(e.fd)
	}
}

// borrow returns the descriptor lent under key, and a func to return it.
func (l *loans) borrow(key loanKey) (fd int, release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[key]
	if e == nil || e.ambiguous {
		return -1, nil, false
	}
	e.borrows++
	return e.fd, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		e.borrows--
		e.closeIfUnused()
	}, true
}

// Reader returns a descriptor of the open regular file whose QID path is
// qid, for pread-style calls until release is called. It reports false
// when no File of the share holds that file open for reading without
// O_DIRECT: its reads are then the server's.
func (s *Share) Reader(qid uint64) (fd int, release func(), ok bool) {
	return s.loans.borrow(loanKey{qid: qid})
}

// Writer is Reader for writes through a File opened with flags: it
// reports false when no File of the share holds that file open for
// writing, without O_DIRECT and with the same O_APPEND, O_DSYNC and
// O_SYNC, or when the share is read-only.
func (s *Share) Writer(qid uint64, flags int) (fd int, release func(), ok bool) {
	return s.loans.borrow(loanKey{qid: qid, write: true, flags: flags & writeFlags})
}

// DropLoans closes every lent descriptor once the server's session
// ended. The server closes every fid at a connection's end, which gives
// the loans back; this keeps a File the server failed to close from
// holding its descriptor open until the share closes. A File closed
// later gives back nothing, or at worst ends a later loan of its inode
// early, after which that inode's transfers go through the server.
func (s *Share) DropLoans() {
	l := &s.loans
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, e := range l.m {
		delete(l.m, key)
		e.opens = 0
		e.closeIfUnused()
	}
}
