package vsock

// ring is a bounded FIFO of bytes: guest data on its way to a host
// connection. Its capacity is the buf_alloc the device advertises, so a
// driver that honours its credit never overflows it. Its storage is
// allocated on first use. One goroutine appends, another drains what
// readable returns without holding the owner's lock: the append never
// touches bytes that are readable.
type ring struct {
	buf        []byte
	capacity   int
	start, len int
}

func newRing(capacity int) ring { return ring{capacity: capacity} }

func (r *ring) free() int { return r.capacity - r.len }

// reserve appends n bytes, if they fit, and returns where to write
// them: a, then b (empty unless the bytes wrap around).
func (r *ring) reserve(n int) (a, b []byte, ok bool) {
	if n > r.free() {
		return nil, nil, false
	}
	if r.buf == nil && n > 0 {
		r.buf = make([]byte, r.capacity)
	}
	end := (r.start + r.len) % r.capacity
	first := min(n, r.capacity-end)
	a, b = r.buf[end:end+first], r.buf[:n-first]
	r.len += n
	return a, b, true
}

// readable returns the longest contiguous run of buffered bytes.
func (r *ring) readable() []byte {
	if r.len == 0 {
		return nil
	}
	return r.buf[r.start:min(r.capacity, r.start+r.len)]
}

// consume drops the first n buffered bytes.
func (r *ring) consume(n int) {
	r.start = (r.start + n) % r.capacity
	r.len -= n
	if r.len == 0 {
		r.start = 0
	}
}

// release drops the storage; the ring is empty and reusable.
func (r *ring) release() { r.buf, r.start, r.len = nil, 0, 0 }
