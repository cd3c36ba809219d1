package machine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"

	"github.com/gvmm-dev/gvmm/machine/unixsock"
	"github.com/gvmm-dev/gvmm/virtio/vsock"
)

// ErrNoVsock is returned for vsock calls on a machine without the device.
var ErrNoVsock = errors.New("machine has no vsock device")

// VsockConfig adds a virtio-vsock device.
type VsockConfig struct {
	// CID is the guest's address, 3 or more.
	CID uint64
	// Socket, when set, is a unix socket path the machine listens on for
	// host connections to guest ports (a client writes "CONNECT <port>\n"
	// and reads "OK <host port>\n"); a guest's connection to host port P
	// goes to the unix socket Socket_P. Without it only DialVsock and
	// ListenVsock reach the guest.
	Socket string
}

// vsockDev is the machine's vsock device and its socket, kept for the
// machine's lifetime: a guest reboot resets the device, which ends its
// connections, while listeners stay.
type vsockDev struct {
	dev  *vsock.Device
	unix *vsock.Unix
	sock fs.FileInfo
}

func (c *VsockConfig) validate() error {
	if c.CID < vsock.MinCID || c.CID > vsock.MaxCID {
		return configError("Vsock.CID", nil, "vsock CID %d: want %d to %d (the others are reserved: 2 is the host)", c.CID, vsock.MinCID, vsock.MaxCID)
	}
	if len(c.Socket) > unixsock.MaxPath {
		return configError("Vsock.Socket", nil, "vsock socket path %q is %d bytes, longer than the %d a unix socket allows", c.Socket, len(c.Socket), unixsock.MaxPath)
	}
	return nil
}

func (m *Machine) openVsock() error {
	c := m.cfg.Vsock
	if c == nil {
		return nil
	}
	opts := vsock.Options{CID: c.CID, Log: m.log}
	if c.Socket != "" {
		opts.Dial = vsock.UnixDialer(c.Socket)
	}
	dev, err := vsock.New(opts)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	v := &vsockDev{dev: dev}
	if c.Socket != "" {
		if _, err := unixsock.RemoveStale(c.Socket); err != nil {
			return fmt.Errorf("machine: vsock socket: %w", err)
		}
		ln, sock, err := unixsock.Listen(c.Socket)
		if err != nil {
			return fmt.Errorf("machine: vsock socket: %w", err)
		}
		v.unix, v.sock = vsock.ServeUnix(dev, ln, m.log), sock
	}
	m.vsock = v
	return nil
}

// closeVsock stops the vsock socket and closes the listeners, once the
// device's connections have ended with the VM.
func (m *Machine) closeVsock() {
	v := m.vsock
	if v == nil {
		return
	}
	if v.unix != nil {
		if err := v.unix.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			m.log.Warn("closing the vsock socket", "err", err)
		}
		if err := unixsock.Remove(m.cfg.Vsock.Socket, v.sock); err != nil {
			m.log.Warn("removing the vsock socket", "err", err)
		}
	}
	v.dev.Close()
}

// DialVsock connects to the guest's vsock port, as a client of the
// vsock socket does, and returns the stream once the guest accepted: a
// *net.UnixConn, whose CloseWrite the guest reads as EOF.
// It fails with a vsock.ErrRefused error if nothing listens on the port.
func (m *Machine) DialVsock(ctx context.Context, port uint32) (net.Conn, error) {
	if m.vsock == nil {
		return nil, ErrNoVsock
	}
	ours, theirs, err := vsock.Pipe()
	if err != nil {
		return nil, err
	}
	if _, err := m.vsock.dev.Connect(ctx, ours, port, nil); err != nil {
		theirs.Close()
		return nil, fmt.Errorf("machine: %w", err)
	}
	return theirs, nil
}

// ListenVsock returns a listener for the guest's connections to host
// port port (CID 2), which it takes ahead of the vsock socket's port_P.
// Closing it stops taking them; the machine's end closes it too.
func (m *Machine) ListenVsock(port uint32) (net.Listener, error) {
	if m.vsock == nil {
		return nil, ErrNoVsock
	}
	l, err := m.vsock.dev.Listen(port)
	if err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	return l, nil
}

// Vsock describes the vsock device; ok is false without one.
func (m *Machine) Vsock() (cfg VsockConfig, stats vsock.Stats, ok bool) {
	if m.vsock == nil {
		return VsockConfig{}, vsock.Stats{}, false
	}
	return *m.cfg.Vsock, m.vsock.dev.Stats(), true
}
