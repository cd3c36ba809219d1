package console

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/gvmm-dev/gvmm/machine/unixsock"
)

// writeTimeout bounds a write to the attached client: a client that
// stops reading is detached rather than stalling the guest's console.
const writeTimeout = time.Second

// BusyMessage is what a second client gets before it is disconnected.
const BusyMessage = "gvmm: another client is attached to this console\r\n"

// Hub serves a serial console on a unix socket for a detached VMM, as
// virsh console and Firecracker's serial socket do. One client at a time
// is attached: it gets the output written to the Hub from then on, and
// what it sends is the guest's input, read from Input. Another client is
// told so and disconnected.
type Hub struct {
	ln   net.Listener
	path string
	sock fs.FileInfo
	log  *slog.Logger
	in   *io.PipeReader
	inW  *io.PipeWriter

	mu     sync.Mutex
	client net.Conn
	closed bool
	wg     sync.WaitGroup
}

// Listen creates the console socket at path (mode 0600; a stale socket
// is replaced) and starts accepting clients.
func Listen(path string, log *slog.Logger) (*Hub, error) {
	if _, err := unixsock.RemoveStale(path); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	ln, sock, err := unixsock.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	in, inW := io.Pipe()
	h := &Hub{ln: ln, path: path, sock: sock, log: log, in: in, inW: inW}
	h.wg.Go(h.accept)
	return h, nil
}

// Input is the attached clients' input; it ends when the Hub is closed.
func (h *Hub) Input() io.Reader { return h.in }

func (h *Hub) accept() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return // closed
		}
		h.mu.Lock()
		switch {
		case h.closed:
			c.Close()
		case h.client != nil:
			_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
			_, _ = io.WriteString(c, BusyMessage)
			c.Close()
		default:
			h.client = c
			h.wg.Go(func() { h.serve(c) })
			h.log.Info("console client attached")
		}
		h.mu.Unlock()
	}
}

// serve forwards one client's input until it leaves.
func (h *Hub) serve(c net.Conn) {
	_, err := io.Copy(h.inW, c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
		h.log.Debug("console client input", "err", err)
	}
	h.detach(c)
}

func (h *Hub) detach(c net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.client == c {
		h.client = nil
		h.log.Info("console client detached")
	}
	c.Close()
}

// Write sends p to the attached client, if any. It never fails: the
// console log is the record, a client that cannot keep up is detached.
func (h *Hub) Write(p []byte) (int, error) {
	h.mu.Lock()
	c := h.client
	h.mu.Unlock()
	if c == nil {
		return len(p), nil
	}
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.Write(p); err != nil {
		h.detach(c)
	}
	return len(p), nil
}

// Close stops accepting, disconnects the client, ends Input and removes
// the socket file.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	c := h.client
	h.mu.Unlock()
	err := h.ln.Close()
	if c != nil {
		c.Close()
	}
	h.inW.Close()
	h.wg.Wait()
	if rmErr := unixsock.Remove(h.path, h.sock); err == nil {
		err = rmErr
	}
	return err
}
