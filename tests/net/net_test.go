// Package net_test boots the stock Debian kernel with gvmm's virtio-net
// device and checks it end to end against the guest kernel's own
// virtio_net driver, on TAPs in the test host: two guests on one bridge
// with the host's address on it. The first is `gvmm run --net tap=NAME`
// (seccomp on), whose TAP gvmm creates; the second runs through the
// library on a TAP the test made beforehand, with a MAC of its own.
// Each guest gets its address, pings the host; 64 MiB move each way
// between the host and the first guest over TCP, checked by a sum of
// the bytes; the second guest sends to the first across the bridge.
// TestSnapshotKeepsTCPConnections (snapshot_test.go) snapshots a guest
// mid-transfer and restores it, then a clone on another TAP.
// The guest's init is tests/guestnet.
package net_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/vmmproc"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire/wiretest"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// guestModules are the guest kernel's PCI transport and virtio-net
// driver; kvmhost resolves net_failover and failover.
var guestModules = []string{"virtio_pci", "virtio_net"}

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestnet", "github.com/gvmm-dev/gvmm/tests/guestnet"),
		kvmhost.WithModules(guestModules...),
		kvmhost.WithHostModules("tun", "bridge"),
	)
}

const (
	bootTimeout = 3 * time.Minute
	bulkTimeout = 4 * time.Minute
	bulk        = 64 << 20
	cmdline     = "console=ttyS0 reboot=k panic=1 quiet"

	bridge   = "gvbr0"
	hostIP   = "10.0.2.1"
	prefix   = "/24"
	guestAIP = "10.0.2.15"
	guestBIP = "10.0.2.16"
	tapA     = "gvtap0" // gvmm creates it
	tapB     = "gvtap1" // the test creates it
)

func guestInitrd(t *testing.T) (kernel, initrd string) {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	mods, err := k.Modules(guestModules...)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "guest.cpio")
	require.NoError(t, initramfs.WriteGuest(p, kvmhost.Asset("guestnet"), mods))
	return k.Vmlinuz, p
}

// makeBridge puts the host's address on a new bridge.
func makeBridge(t *testing.T) netlink.Link {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}}
	require.NoError(t, netlink.LinkAdd(br))
	t.Cleanup(func() { _ = netlink.LinkDel(br) })
	addr, err := netlink.ParseAddr(hostIP + prefix)
	require.NoError(t, err)
	require.NoError(t, netlink.AddrAdd(br, addr))
	require.NoError(t, netlink.LinkSetUp(br))
	return br
}

// tcp dials the guest at ip.
func tcp(ip string) wiretest.Dialer {
	return func(ctx context.Context, port uint32) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp4", fmt.Sprintf("%s:%d", ip, port))
	}
}

func TestTwoGuestsOnABridge(t *testing.T) {
	kernel, initrd := guestInitrd(t)
	br := makeBridge(t)

	// Guest A: gvmm run creates its TAP; the test puts it on the bridge.
	apiSock := filepath.Join(t.TempDir(), "api.sock")
	vmA := vmmproc.Start(t, 40*time.Minute, kvmhost.Asset("gvmm"), "run", "--kernel", kernel, "--initrd", initrd,
		"--cmdline", cmdline+" gvmm.ip="+guestAIP+prefix+" gvmm.host="+hostIP,
		"--memory", "256M", "--net", "tap="+tapA, "--api-socket", apiSock)
	linkA := vmA.WaitForLink(t, tapA, time.Minute)
	require.NoError(t, netlink.LinkSetMaster(linkA, br))

	assert.Equal(t, machine.DefaultMAC(tapA).String(), vmA.WaitFor(t, "mac", bootTimeout), "the default MAC")
	assert.Equal(t, "ok", vmA.WaitFor(t, "ping", bootTimeout))
	vmA.WaitFor(t, "ready", bootTimeout)
	linkA, err := netlink.LinkByName(tapA)
	require.NoError(t, err)
	assert.NotZero(t, linkA.Attrs().Flags&net.FlagUp, "gvmm brings up the TAP it creates")

	t.Run("64 MiB host to guest", func(t *testing.T) { wiretest.ToGuest(t, tcp(guestAIP), bulk) })
	t.Run("64 MiB guest to host", func(t *testing.T) { wiretest.FromGuest(t, tcp(guestAIP), bulk) })

	t.Run("rate limit set through the API", func(t *testing.T) {
		c := api.NewClient(apiSock)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		const rate, n = 1 << 20, 8 << 20
		require.NoError(t, c.SetNetRateLimit(ctx, tapA, api.RateLimit{RX: &api.Limit{Bytes: api.Bucket{Rate: rate, Burst: 128 << 10}}}))
		info, err := c.Info(ctx)
		require.NoError(t, err)
		require.Len(t, info.Nets, 1)
		assert.Equal(t, tapA, info.Nets[0].ID)
		assert.Equal(t, machine.DefaultMAC(tapA).String(), info.Nets[0].MAC)
		assert.Equal(t, api.Bucket{Rate: rate, Burst: 128 << 10}, info.Nets[0].RateLimit.RX.Bytes)
		assert.GreaterOrEqual(t, info.Nets[0].RxBytes, uint64(bulk), "what the device counted host to guest")
		assert.GreaterOrEqual(t, info.Nets[0].TxBytes, uint64(bulk), "what the device counted guest to host")
		start := time.Now()
		wiretest.ToGuest(t, tcp(guestAIP), n)
		limited := time.Since(start)
		// 8 MiB at 1 MiB/s, less the burst; the frames' headers count too.
		assert.Greater(t, limited, 7*time.Second, "host to guest at 1 MiB/s")
		require.NoError(t, c.SetNetRateLimit(ctx, tapA, api.RateLimit{RX: &api.Limit{}}))
		start = time.Now()
		wiretest.ToGuest(t, tcp(guestAIP), n)
		t.Logf("8 MiB host to guest: %s limited to 1 MiB/s, %s after the limit was lifted", limited.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		assert.Less(t, time.Since(start), limited/2, "the limit lifted at run time")
		err = c.SetNetRateLimit(ctx, "nosuchtap", api.RateLimit{RX: &api.Limit{}})
		var apiErr *api.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, 404, apiErr.StatusCode)
	})

	t.Run("second guest on the bridge", func(t *testing.T) {
		// Guest B: an existing, persistent TAP, used as it is.
		tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tapB},
			Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE}
		require.NoError(t, netlink.LinkAdd(tap))
		for _, f := range tap.Fds {
			f.Close()
		}
		t.Cleanup(func() { _ = netlink.LinkDel(tap) })
		require.NoError(t, netlink.LinkSetMaster(tap, br))
		require.NoError(t, netlink.LinkSetUp(tap))
		mac, err := net.ParseMAC("52:54:00:00:00:0b")
		require.NoError(t, err)
		const n = 16 << 20
		outB := &guest.Recorder{}
		m, err := machine.New(machine.Config{Kernel: kernel, Initrd: initrd, Memory: 256 << 20, Console: outB,
			Cmdline: fmt.Sprintf("%s gvmm.ip=%s%s gvmm.host=%s gvmm.dial=%s:%d gvmm.dialbytes=%d",
				cmdline, guestBIP, prefix, hostIP, guestAIP, vsockwire.PortSink, n),
			Nets: []machine.Net{{Tap: tapB, MAC: mac}}})
		require.NoError(t, err)
		require.NoError(t, m.Start(context.Background()))
		exitedB := make(chan struct{})
		go func() { _ = m.Wait(); close(exitedB) }()
		t.Cleanup(func() {
			m.Stop()
			<-exitedB
			if t.Failed() {
				t.Logf("guest B console:\n%s", outB.String())
			}
		})
		assert.Equal(t, mac.String(), vmmproc.WaitFor(t, outB, "mac", bootTimeout, exitedB))
		assert.Equal(t, "ok", vmmproc.WaitFor(t, outB, "ping", bootTimeout, exitedB))
		assert.Equal(t, fmt.Sprintf("%d %s", n, vsockwire.PatternSum(n)), vmmproc.WaitFor(t, outB, "dialed", bulkTimeout, exitedB))
		infos := m.Nets()
		require.Len(t, infos, 1)
		assert.Equal(t, tapB, infos[0].Tap)
		assert.GreaterOrEqual(t, infos[0].Stats.TxBytes, uint64(n), "guest B's device counted what it sent")
		assert.Zero(t, infos[0].Stats.TxDropped)
	})

	// The TAP gvmm created goes with it.
	vmA.Kill()
	_, err = netlink.LinkByName(tapA)
	assert.Error(t, err, "%s outlived gvmm", tapA)
}
