// Package metrics_test boots the stock Debian kernel under `gvmm run`
// (seccomp on) with a disk, a network device on a TAP, a vsock device and
// a balloon, and scrapes GET /metrics on its API socket twice while the
// guest (tests/guestmetrics) writes and reads its disk and the host
// echoes bytes through TCP and vsock: both scrapes parse with
// Prometheus' text parser, and the counters move.
package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/vmmproc"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire/wiretest"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// guestModules are the guest kernel's PCI transport, disk, network,
// vsock and balloon drivers.
var guestModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "vsock", "vmw_vsock_virtio_transport_common",
	"vmw_vsock_virtio_transport", "virtio_balloon"}

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestmetrics", "github.com/gvmm-dev/gvmm/tests/guestmetrics"),
		kvmhost.WithModules(guestModules...),
		kvmhost.WithHostModules("tun"), // the guest's TAP
	)
}

const (
	bootTimeout = 3 * time.Minute
	ioTimeout   = time.Minute
	cmdline     = "console=ttyS0 reboot=k panic=1 quiet"
	cid         = 5
	echoBytes   = 256 << 10
	// The TAP gvmm creates, and the addresses on either end of it.
	tap     = "gvmmmetrics0"
	hostIP  = "10.0.3.1"
	guestIP = "10.0.3.2"
	prefix  = "/24"
	// busyTime is how long the guest's disk loop runs between scrapes.
	busyTime = 3 * time.Second
)

// scrape fetches and parses the metrics once.
func scrape(t *testing.T, c *api.Client) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	text, err := c.Metrics(ctx)
	require.NoError(t, err)
	fams, err := api.ParseMetrics(text)
	require.NoError(t, err, "the scrape parses:\n%s", text)
	return fams
}

// value sums the series of a counter or gauge whose labels include all
// of want; ok is false if there is none.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) (sum float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
		ok = true
	}
	return sum, ok
}

// vsockEcho connects to the guest's vsock echo through gvmm's vsock
// socket.
func vsockEcho(t *testing.T, sock string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	c, err := wiretest.UnixDialer(sock)(ctx, vsockwire.PortEcho)
	require.NoError(t, err)
	return c
}

// echo sends n bytes through an echo connection c and reads them back.
func echo(t *testing.T, c net.Conn, n int) {
	t.Helper()
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(ioTimeout)))
	msg := make([]byte, n)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.NoError(t, <-errc)
	require.Equal(t, msg, got, "the echo")
}

func TestScrapeOfABusyGuest(t *testing.T) {
	k, err := debkernel.Get()
	require.NoError(t, err)
	mods, err := k.Modules(guestModules...)
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "gvmm-metrics-") // short: unix socket paths are limited
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	initrd := filepath.Join(dir, "guest.cpio")
	require.NoError(t, initramfs.WriteGuest(initrd, kvmhost.Asset("guestmetrics"), mods))
	img := filepath.Join(dir, "disk.img")
	require.NoError(t, os.WriteFile(img, nil, 0o600))
	require.NoError(t, os.Truncate(img, 16<<20))
	sock, apiSock := filepath.Join(dir, "v.sock"), filepath.Join(dir, "api.sock")

	vm := vmmproc.Start(t, 20*time.Minute, kvmhost.Asset("gvmm"), "run", "--kernel", k.Vmlinuz, "--initrd", initrd,
		"--cmdline", cmdline+" gvmm.ip="+guestIP+prefix, "--memory", "256M", "--disk", img,
		"--net", "tap="+tap, "--vsock", fmt.Sprintf("cid=%d,socket=%s", cid, sock), "--balloon",
		"--api-socket", apiSock)
	// The host's end of the guest's network: the TAP gvmm creates, with
	// an address.
	addr, err := netlink.ParseAddr(hostIP + prefix)
	require.NoError(t, err)
	require.NoError(t, netlink.AddrAdd(vm.WaitForLink(t, tap, bootTimeout), addr))
	vm.WaitFor(t, "ready", bootTimeout)
	c := api.NewClient(apiSock)
	defer c.Close()

	before := scrape(t, c)
	echo(t, vsockEcho(t, sock), echoBytes)
	tcp, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", guestIP, vsockwire.PortEcho), ioTimeout)
	require.NoError(t, err)
	echo(t, tcp, echoBytes)
	time.Sleep(busyTime)
	after := scrape(t, c)
	require.Empty(t, vm.Out.Values("error"), "the guest reported errors")

	moved := func(name string, labels ...string) {
		t.Helper()
		b, okb := value(before, name, labels...)
		a, oka := value(after, name, labels...)
		require.True(t, okb && oka, "%s%v is in both scrapes", name, labels)
		assert.Greater(t, a, b, "%s%v moves", name, labels)
		t.Logf("%s%v: %v -> %v", name, labels, b, a)
	}
	atLeast := func(min float64, name string, labels ...string) {
		t.Helper()
		b, _ := value(before, name, labels...)
		a, ok := value(after, name, labels...)
		require.True(t, ok, "%s%v is in the scrape", name, labels)
		assert.GreaterOrEqual(t, a-b, min, "%s%v grows by %v or more", name, labels, min)
	}
	disk := []string{"device", "block0"}
	moved("gvmm_disk_requests_total", append(disk, "op", "read")...)
	moved("gvmm_disk_requests_total", append(disk, "op", "write")...)
	moved("gvmm_disk_requests_total", append(disk, "op", "flush")...)
	moved("gvmm_disk_bytes_total", append(disk, "op", "read")...)
	moved("gvmm_disk_bytes_total", append(disk, "op", "write")...)
	moved("gvmm_disk_request_duration_seconds", disk...)
	errs, _ := value(after, "gvmm_disk_errors_total", disk...)
	assert.Zero(t, errs, "no disk request failed")

	nd := []string{"device", "net0"}
	atLeast(echoBytes, "gvmm_net_bytes_total", append(nd, "direction", "tx")...)
	atLeast(echoBytes, "gvmm_net_bytes_total", append(nd, "direction", "rx")...)
	moved("gvmm_net_packets_total", append(nd, "direction", "tx")...)
	moved("gvmm_net_packets_total", append(nd, "direction", "rx")...)
	throttled, ok := value(after, "gvmm_net_throttled_packets_total", nd...)
	require.True(t, ok, "the rate limiter's throttling is reported")
	assert.Zero(t, throttled, "no limit, no throttling")

	vs := []string{"device", "vsock0"}
	atLeast(echoBytes, "gvmm_vsock_bytes_total", append(vs, "direction", "tx")...)
	atLeast(echoBytes, "gvmm_vsock_bytes_total", append(vs, "direction", "rx")...)
	moved("gvmm_vsock_packets_total", append(vs, "direction", "tx")...)
	moved("gvmm_vsock_packets_total", append(vs, "direction", "rx")...)
	moved("gvmm_vsock_accepted_connections_total", vs...)

	// The guest's console lines are port I/O exits to the UART; its
	// queue notifications go to ioeventfds, without an exit.
	moved("gvmm_vcpu_exits_total")
	moved("gvmm_vcpu_exits_total", "reason", "io")
	moved("gvmm_io_exits_total", "bus", "pio", "device", "uart")
	bars, _ := value(after, "gvmm_io_exits_total", "bus", "mmio", "device", "pci_bars")
	assert.Positive(t, bars, "the drivers' accesses to the virtio BARs are counted")
	moved("gvmm_uptime_seconds")
	moved("gvmm_vmm_cpu_seconds_total")
	guestTime, _ := value(after, "gvmm_vcpu_seconds_total", "mode", "guest")
	vmmTime, _ := value(after, "gvmm_vcpu_seconds_total", "mode", "vmm_system")
	assert.Positive(t, guestTime+vmmTime, "the vCPU's time is accounted")
	t.Logf("vCPU time: guest %.2f s, in the VMM's kernel side %.2f s", guestTime, vmmTime)

	for _, name := range []string{"gvmm_vmm_rss_bytes", "gvmm_vmm_pss_bytes"} {
		v, ok := value(after, name)
		require.True(t, ok, name)
		assert.Greater(t, v, float64(1<<20), name)
	}
	target, ok := value(after, "gvmm_balloon_target_bytes", "device", "balloon0")
	require.True(t, ok, "the balloon's target is reported")
	assert.Zero(t, target)
	total, ok := value(after, "gvmm_guest_memory_stat", "device", "balloon0", "stat", "total_memory")
	require.True(t, ok, "the guest's memory statistics are reported")
	assert.Greater(t, total, float64(128<<20), "the guest's total memory")

	require.NoError(t, c.Stop(context.Background()))
	select {
	case <-vm.Exited:
	case <-time.After(ioTimeout):
		t.Fatal("gvmm did not end after stop")
	}
	assert.True(t, vm.Cmd.ProcessState.Success(), "gvmm ends cleanly after stop: %v", vm.Cmd.ProcessState)
}
