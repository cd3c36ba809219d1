package vsock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"
)

// Firecracker's host-side protocol: a client of the device's unix
// socket writes "CONNECT <port>\n" and reads "OK <host port>\n", after
// which the stream is the guest's port.
const (
	connectCmd = "CONNECT "
	// maxConnectLine bounds the command line: "CONNECT 4294967295\n".
	maxConnectLine = 32
	// maxHandshakes bounds the clients that have not finished their
	// command; more are closed at once.
	maxHandshakes = 64
	acceptBackoff = 100 * time.Millisecond
)

// ErrConnectLine is wrapped by errors about a client's command.
var ErrConnectLine = errors.New(`vsock: want "CONNECT <port>\n"`)

// ParseConnect reads a client's command from its first line.
func ParseConnect(line string) (uint32, error) {
	port, ok := connectPort(line)
	if !ok {
		return 0, fmt.Errorf("%w, got %q", ErrConnectLine, line)
	}
	v, err := strconv.ParseUint(port, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w, got %q", ErrConnectLine, line)
	}
	return uint32(v), nil
}

// connectPort returns the port of "CONNECT <port>\n" (or "\r\n").
func connectPort(line string) (string, bool) {
	if len(line) <= len(connectCmd) || line[:len(connectCmd)] != connectCmd || line[len(line)-1] != '\n' {
		return "", false
	}
	port := line[len(connectCmd) : len(line)-1]
	if n := len(port); n > 0 && port[n-1] == '\r' {
		port = port[:n-1]
	}
	return port, port != "" && port[0] != '+'
}

// Unix serves the host side of a device on a unix socket: host clients
// connect through it to guest ports.
type Unix struct {
	dev    *Device
	ln     net.Listener
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	slots  chan struct{}
	wg     sync.WaitGroup
}

// ServeUnix accepts host clients on ln until Close.
func ServeUnix(dev *Device, ln net.Listener, log *slog.Logger) *Unix {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	u := &Unix{dev: dev, ln: ln, log: log.With("vsock", ln.Addr().String()), ctx: ctx, cancel: cancel,
		slots: make(chan struct{}, maxHandshakes)}
	u.wg.Go(u.accept)
	return u
}

// Close stops accepting, abandons the handshakes in progress and waits
// for its goroutines; established connections are the device's.
func (u *Unix) Close() error {
	err := u.ln.Close()
	u.cancel()
	u.wg.Wait()
	return err
}

func (u *Unix) accept() {
	for {
		c, err := u.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			u.log.Warn("vsock socket accept", "err", err)
			select {
			case <-u.ctx.Done():
				return
			case <-time.After(acceptBackoff): // EMFILE and the like pass
			}
			continue
		}
		select {
		case u.slots <- struct{}{}:
		default:
			u.log.Warn("vsock socket: too many clients in their handshake, one closed", "max", maxHandshakes)
			c.Close()
			continue
		}
		u.wg.Go(func() {
			defer func() { <-u.slots }()
			u.handshake(c)
		})
	}
}

// handshake reads a client's command and connects it to the guest; a
// refused or absent guest port closes the client.
func (u *Unix) handshake(c net.Conn) {
	stop := context.AfterFunc(u.ctx, func() { c.Close() })
	defer stop()
	_ = c.SetReadDeadline(time.Now().Add(ConnectTimeout))
	line, err := readLine(c)
	if err == nil {
		err = c.SetReadDeadline(time.Time{})
	}
	var port uint32
	if err == nil {
		port, err = ParseConnect(line)
	}
	if err != nil {
		u.log.Info("vsock socket client dropped", "err", err)
		c.Close()
		return
	}
	if _, err := u.dev.Connect(u.ctx, c, port, okLine); err != nil {
		u.log.Info("vsock connection to the guest failed", "port", port, "err", err)
	}
}

func okLine(local uint32) []byte { return fmt.Appendf(nil, "OK %d\n", local) }

// readLine reads up to and including the first '\n', a byte at a time
// so that nothing after it is consumed: the client may send its first
// data with the command, and the command in pieces.
func readLine(c net.Conn) (string, error) {
	var b [maxConnectLine]byte
	for n := 0; n < len(b); n++ {
		if _, err := c.Read(b[n : n+1]); err != nil {
			return "", fmt.Errorf("reading the command: %w", err)
		}
		if b[n] == '\n' {
			return string(b[:n+1]), nil
		}
	}
	return "", fmt.Errorf("%w: no newline in %d bytes", ErrConnectLine, maxConnectLine)
}

// UnixDialer connects guest connections to host port P to the unix
// socket path_P, as Firecracker does.
func UnixDialer(path string) func(context.Context, uint32) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, port uint32) (net.Conn, error) {
		return d.DialContext(ctx, "unix", fmt.Sprintf("%s_%d", path, port))
	}
}
