// Package vsock_test boots the stock Debian kernel with gvmm's
// virtio-vsock device and checks end to end, against the guest kernel's
// own vsock drivers, both ways of reaching the guest: the Firecracker
// protocol on a unix socket of `gvmm run --vsock` (host clients, and the
// guest's connections to PATH_P), and the library's DialVsock and
// ListenVsock. The guest's init is tests/guestvsock, whose services
// tests/internal/vsockwire describes.
package vsock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/vmmproc"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire/wiretest"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
	"github.com/gvmm-dev/gvmm/virtio/vsock"
)

// guestModules are the guest kernel's PCI transport and vsock drivers.
var guestModules = []string{"virtio_pci", "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"}

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestvsock", "github.com/gvmm-dev/gvmm/tests/guestvsock"),
		kvmhost.WithModules(guestModules...),
	)
}

const (
	bootTimeout = 3 * time.Minute
	// bulkTimeout bounds moving bulk bytes one way: the emulated test
	// host moves a few MiB/s.
	bulkTimeout = 10 * time.Minute
	ioTimeout   = time.Minute
	bulk        = 64 << 20
	concurrent  = 32
	perConn     = 1 << 20
	cmdline     = "console=ttyS0 reboot=k panic=1 quiet"
	// stallBudget bounds what a connection whose guest reader stopped
	// may take from the host before the host's writes block: the
	// guest's buf_alloc, the device's read chunk and the socket buffers.
	stallBudget = 8 << 20
	// rssBudget bounds the VMM's growth while a host writes 64 MiB to it.
	rssBudget = 16 << 20
)

func guestInitrd(t *testing.T) (kernel, initrd string) {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	mods, err := k.Modules(guestModules...)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "guest.cpio")
	require.NoError(t, initramfs.WriteGuest(p, kvmhost.Asset("guestvsock"), mods))
	return k.Vmlinuz, p
}

// waitReady waits for the guest's services and checks its CID.
func waitReady(t *testing.T, out *guest.Recorder, cid uint64, exited <-chan struct{}) {
	t.Helper()
	vmmproc.WaitFor(t, out, "ready", bootTimeout, exited)
	require.Equal(t, []string{strconv.FormatUint(cid, 10)}, out.Values("cid"), "the guest's driver read its CID")
}

// echoes checks the echo service on a fresh connection.
func echoes(t *testing.T, dial wiretest.Dialer, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	c, err := dial(ctx, vsockwire.PortEcho)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(ioTimeout)))
	_, err = io.WriteString(c, msg)
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	assert.Equal(t, msg, string(got))
}

// guestDials has the guest connect to host port port, send n bytes, and
// returns its reply line.
func guestDials(t *testing.T, dial wiretest.Dialer, port uint32, n uint64) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	c, err := dial(ctx, vsockwire.PortControl)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(bulkTimeout)))
	_, err = fmt.Fprintf(c, "dial %d %d\n", port, n)
	require.NoError(t, err)
	answer, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSpace(answer)
}

// serveSums answers each connection of l with the byte count and sum of
// what it read, as the guest's sink does.
func serveSums(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			n, sum, err := vsockwire.Sum(c)
			if err == nil {
				fmt.Fprintf(c, "%d %s", n, sum)
			}
		}()
	}
}

// concurrentEchoes runs conns echo connections at once, each moving
// perConn bytes both ways.
func concurrentEchoes(t *testing.T, dial wiretest.Dialer, conns int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Go(func() {
			errs <- func() error {
				ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
				defer cancel()
				c, err := dial(ctx, vsockwire.PortEcho)
				if err != nil {
					return fmt.Errorf("connection %d: %w", i, err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(bulkTimeout))
				wrote := make(chan error, 1)
				go func() { wrote <- vsockwire.WritePattern(c, perConn) }()
				n, sum, err := vsockwire.Sum(io.LimitReader(c, perConn))
				if err := errors.Join(err, <-wrote); err != nil {
					return fmt.Errorf("connection %d: %w", i, err)
				}
				if n != perConn || sum != vsockwire.PatternSum(perConn) {
					return fmt.Errorf("connection %d: %d bytes came back, sum %s", i, n, sum)
				}
				return nil
			}()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
}

// readLine reads one line a byte at a time, leaving the stream after it.
func readLine(c net.Conn) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 64 {
		if _, err := c.Read(one); err != nil {
			return string(b), err
		}
		b = append(b, one[0])
		if one[0] == '\n' {
			return string(b), nil
		}
	}
	return string(b), errors.New("line too long")
}

func rssBytes(t *testing.T, pid int) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestUnixSocket runs `gvmm run --vsock` and reaches the guest through
// its unix socket the way a Firecracker user does, and the guest the
// host through PATH_P.
func TestUnixSocket(t *testing.T) {
	kernel, initrd := guestInitrd(t)
	dir, err := os.MkdirTemp("", "gvmm-vsock-") // short: unix socket paths are limited
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, apiSock := filepath.Join(dir, "v.sock"), filepath.Join(dir, "api.sock")
	const cid = 7
	vm := vmmproc.Start(t, 40*time.Minute, kvmhost.Asset("gvmm"), "run", "--kernel", kernel, "--initrd", initrd, "--cmdline", cmdline,
		"--memory", "256M", "--vsock", fmt.Sprintf("cid=%d,socket=%s", cid, sock), "--api-socket", apiSock)
	waitReady(t, vm.Out, cid, vm.Exited)
	dial := wiretest.UnixDialer(sock)

	t.Run("echo", func(t *testing.T) { echoes(t, dial, "hello through the unix socket") })

	t.Run("command in pieces, data with it", func(t *testing.T) {
		c, err := net.Dial("unix", sock)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(ioTimeout)))
		_, err = io.WriteString(c, "CONN")
		require.NoError(t, err)
		time.Sleep(100 * time.Millisecond)
		_, err = fmt.Fprintf(c, "ECT %d\nearly", vsockwire.PortEcho)
		require.NoError(t, err)
		line, err := readLine(c)
		require.NoError(t, err)
		assert.Regexp(t, `^OK \d+\n$`, line)
		got := make([]byte, 5)
		_, err = io.ReadFull(c, got)
		require.NoError(t, err)
		assert.Equal(t, "early", string(got))
	})

	t.Run("refused and malformed close the client", func(t *testing.T) {
		for _, cmd := range []string{fmt.Sprintf("CONNECT %d\n", 4999), "CONNECT x\n", "HELLO\n"} {
			c, err := net.Dial("unix", sock)
			require.NoError(t, err)
			require.NoError(t, c.SetDeadline(time.Now().Add(ioTimeout)))
			_, err = io.WriteString(c, cmd)
			require.NoError(t, err)
			rest, err := io.ReadAll(c)
			assert.NoError(t, err, "%q: closed, not timed out", cmd)
			assert.Empty(t, rest, "%q: no OK", cmd)
			c.Close()
		}
	})

	t.Run("64 MiB host to guest", func(t *testing.T) { wiretest.ToGuest(t, dial, bulk) })
	t.Run("64 MiB guest to host", func(t *testing.T) { wiretest.FromGuest(t, dial, bulk) })

	t.Run("guest connects to PATH_P", func(t *testing.T) {
		l, err := net.Listen("unix", fmt.Sprintf("%s_%d", sock, 6000))
		require.NoError(t, err)
		defer l.Close()
		go serveSums(l)
		assert.Equal(t, fmt.Sprintf("ok %d %s", bulk, vsockwire.PatternSum(bulk)), guestDials(t, dial, 6000, bulk))
		answer := guestDials(t, dial, 6001, 10)
		assert.True(t, strings.HasPrefix(answer, "error "), "no PATH_6001: the guest's connect fails: %q", answer)
	})

	t.Run("32 connections at once", func(t *testing.T) { concurrentEchoes(t, dial, concurrent) })

	t.Run("a guest that stops reading", func(t *testing.T) {
		before := rssBytes(t, vm.Cmd.Process.Pid)
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		c, err := dial(ctx, vsockwire.PortStall)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetWriteDeadline(time.Now().Add(20*time.Second)))
		var written uint64
		buf := make([]byte, 64<<10)
		for written < bulk {
			n, err := c.Write(buf)
			written += uint64(n)
			if err != nil {
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
				break
			}
		}
		after := rssBytes(t, vm.Cmd.Process.Pid)
		t.Logf("stalled connection took %d KiB; gvmm's RSS %d -> %d KiB", written>>10, before>>10, after>>10)
		assert.Less(t, written, uint64(stallBudget), "the host's writes block once the guest's credit is used")
		assert.Less(t, int64(after)-int64(before), int64(rssBudget), "gvmm's memory does not grow with what the host writes")
		echoes(t, dial, "others still flow") // only the stalled connection stalls
	})

	t.Run("GET /vm", func(t *testing.T) {
		client := api.NewClient(apiSock)
		defer client.Close()
		info, err := client.Info(context.Background())
		require.NoError(t, err)
		require.NotNil(t, info.Vsock)
		assert.Equal(t, uint64(cid), info.Vsock.CID)
		assert.Equal(t, sock, info.Vsock.Socket)
		assert.GreaterOrEqual(t, info.Vsock.Accepted, uint64(concurrent+6))
		assert.Positive(t, info.Vsock.Refused)
	})

	require.NoError(t, vm.Cmd.Process.Signal(syscall.SIGTERM))
	<-vm.Exited
	_, err = os.Lstat(sock)
	assert.ErrorIs(t, err, os.ErrNotExist, "gvmm removes its vsock socket")
}

// TestLibrary embeds a machine and talks to its guest with DialVsock and
// ListenVsock, without any socket file.
func TestLibrary(t *testing.T) {
	kernel, initrd := guestInitrd(t)
	const cid = 9
	out := &guest.Recorder{}
	m, err := machine.New(machine.Config{Kernel: kernel, Initrd: initrd, Cmdline: cmdline, Memory: 256 << 20,
		Console: out, Vsock: &machine.VsockConfig{CID: cid}})
	require.NoError(t, err)
	require.NoError(t, m.Start(context.Background()))
	exited := make(chan struct{})
	go func() { _ = m.Wait(); close(exited) }()
	t.Cleanup(func() {
		m.Stop()
		<-exited
		if t.Failed() {
			t.Logf("console:\n%s", out.String())
		}
	})
	waitReady(t, out, cid, exited)
	dial := wiretest.Dialer(m.DialVsock)

	t.Run("echo", func(t *testing.T) { echoes(t, dial, "hello through DialVsock") })

	t.Run("refused", func(t *testing.T) {
		_, err := m.DialVsock(context.Background(), 4999)
		assert.ErrorIs(t, err, vsock.ErrRefused)
	})

	t.Run("64 MiB host to guest", func(t *testing.T) { wiretest.ToGuest(t, dial, bulk) })
	t.Run("64 MiB guest to host", func(t *testing.T) { wiretest.FromGuest(t, dial, bulk) })

	t.Run("guest connects to ListenVsock", func(t *testing.T) {
		l, err := m.ListenVsock(6000)
		require.NoError(t, err)
		defer l.Close()
		go serveSums(l)
		assert.Equal(t, fmt.Sprintf("ok %d %s", bulk, vsockwire.PatternSum(bulk)), guestDials(t, dial, 6000, bulk))
		answer := guestDials(t, dial, 6001, 10)
		assert.True(t, strings.HasPrefix(answer, "error "), "no listener on 6001: %q", answer)
	})

	t.Run("32 connections at once", func(t *testing.T) { concurrentEchoes(t, dial, concurrent) })
}
