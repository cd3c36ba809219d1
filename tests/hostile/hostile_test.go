// Package hostile_test runs guests that attack gvmm and checks that the
// VMM neither panics nor grows without bound, keeps serving, and ends
// with a clear message where the guest broke itself.
//
// TestHostileGuest boots the stock Debian kernel with tests/guesthostile
// as init: root user space that hammers every I/O port, the MMIO hole,
// the PCI configuration and BARs of the devices it unbinds, drives a
// virtio-blk queue, the virtio-9p share, the virtio-vsock device and the
// virtio-net device (on a TAP with the host's address) by hand with
// hostile rings, 9P messages, packets and frames, and finally triple-faults
// the machine through the kernel's reboot=t path. TestGuestBreaksItself
// boots tiny hand-made PVH kernels that break the machine at once, and
// TestRebootLoop one that resets it as soon as it runs, forever.
//
// Exits cost hundreds of microseconds in the emulated KVM test host, so
// the guest samples where it could be exhaustive (see its command line
// keys, which GVMM_HOSTILE_ARGS adds to); REP INS brings the accesses
// into millions.
package hostile_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/gvmm-dev/gvmm/internal/ratelog"
	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/guestblk/pattern"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/payload"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
	"github.com/gvmm-dev/gvmm/virtio/vsock"
)

// guestModules are what the hostile guest loads: the PCI transport, the
// disk driver and the 9p client (dependencies resolved by debkernel).
var guestModules = []string{"virtio_pci", "virtio_blk", "9pnet_virtio", "9p"}

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guesthostile", "github.com/gvmm-dev/gvmm/tests/guesthostile"),
		kvmhost.WithModules(guestModules...),
		kvmhost.WithHostModules("tun"),
	)
}

// envGuestArgs adds keys to the hostile guest's command line (see
// tests/guesthostile), e.g. to rerun a few phases: "gvmm.phases=ports,break".
const envGuestArgs = "GVMM_HOSTILE_ARGS"

const (
	mib = 1 << 20
	// runTimeout bounds one gvmm run; a stuck guest fails the test.
	runTimeout = 8 * time.Minute
	guestMiB   = 256
	diskBytes  = 16 * mib
	// Bounds on the VMM while the guest attacks it: guest RAM it may
	// have touched plus a fixed allowance for the VMM itself, threads,
	// descriptors and log output (info level, where one line per
	// refused request or register write ran into megabytes).
	rssSlackMiB = 64
	maxThreads  = 48
	// The vsock device holds a host socket per connection, up to its
	// limit, which the guest's connection flood reaches.
	maxFDs    = 64 + vsock.DefaultMaxConns + 1 // and the TAP
	maxStderr = 32 << 10
)

// phases are what the guest reports, in order, before it breaks the
// machine.
var phases = []string{"boot", "ports", "uart", "storm", "mmio", "config", "bar", "queue", "share", "vsock", "net", "rebind", "verify"}

// queueOutcomes is what the device must answer to each hand-made queue
// case of tests/guesthostile/queue.go: well-formed requests are answered
// (status 0 OK, 1 IOERR, 2 UNSUPP; a request without a status byte is
// returned unanswered), broken chains and queue setups put the device in
// NEEDS_RESET, and the device works again after every reset.
var queueOutcomes = map[string]string{
	"good-read":                     "used:status=0:data=ok",
	"good-read-indirect":            "used:status=0:len=513",
	"get-id":                        "used:status=0:len=21",
	"past-end":                      "used:status=1:len=1",
	"sector-overflow":               "used:status=1:len=1",
	"unknown-type":                  "used:status=2:len=1",
	"odd-length":                    "used:status=1:len=1",
	"wrong-direction":               "used:status=1:len=1",
	"short-header":                  "used:status=1:len=1",
	"no-status":                     "used:status=238:len=0",
	"zeroes-too-many-ranges":        "used:status=1:len=1",
	"zeroes-range-too-long":         "used:status=1:len=1",
	"loop":                          "needs-reset",
	"self-loop":                     "needs-reset",
	"next-out-of-range":             "needs-reset",
	"head-out-of-range":             "needs-reset",
	"beyond-ram":                    "needs-reset",
	"mmio-hole":                     "needs-reset",
	"own-bar":                       "needs-reset",
	"wraps":                         "needs-reset",
	"huge-length":                   "needs-reset",
	"readable-after-writable":       "needs-reset",
	"avail-jump":                    "needs-reset",
	"indirect-len-zero":             "needs-reset",
	"indirect-len-unaligned":        "needs-reset",
	"indirect-too-long":             "needs-reset",
	"indirect-beyond-ram":           "needs-reset",
	"indirect-with-next":            "needs-reset",
	"indirect-nested":               "needs-reset",
	"indirect-loop":                 "needs-reset",
	"indirect-not-negotiated":       "needs-reset",
	"size-not-power-of-two":         "needs-reset",
	"size-too-large":                "needs-reset",
	"desc-misaligned":               "needs-reset",
	"ring-beyond-ram":               "needs-reset",
	"ring-in-mmio-hole":             "needs-reset",
	"ring-wraps":                    "needs-reset",
	"enable-before-features-ok":     "needs-reset",
	"driver-ok-without-features-ok": "needs-reset",
	"features-not-offered":          "refused",
	"no-version-1":                  "refused",
	"queue-select-out-of-range":     "ready:status=0xf",
	"clear-status-bits":             "status=0xf:used:status=0:data=ok",
	"notify-storm":                  "used:status=0:data=ok",
	"reset-in-flight":               "ok",
	"flood-bad-requests":            "used=5120:ioerr=5120",
	"flood-broken-chains":           "needs-reset=200",
	"good-read-after":               "used:status=0:data=ok",
}

// shareOutcomes is what the share must answer to each hand-made 9P
// message of tests/guesthostile/p9.go: nothing outside the folder is
// walked to or opened, malformed messages get an Rlerror (7) and the
// session goes on, answers never overrun the room given, and a flood is
// answered whole.
var shareOutcomes = map[string]string{
	"version":              "type=101",
	"attach":               "type=105",
	"walk-dotdot":          "type=7:errno=EINVAL",
	"walk-slash":           "type=7:errno=EINVAL",
	"walk-through-symlink": "type=7:errno=EINVAL",
	"walk-symlink":         "type=111:nwqid=1",
	"open-symlink":         "type=7:errno=EINVAL",
	"walk-device":          "type=111:nwqid=1",
	"open-device":          "type=7:errno=EPERM",
	"flush-self":           "type=109",
	"size-lies":            "type=7:errno=EINVAL",
	"unknown-type":         "type=7:errno=ENOTSUP", // EOPNOTSUPP's value
	"notag":                "type=7:errno=EINVAL",
	"walk-file":            "type=111:nwqid=1",
	"open-file":            "type=13",
	"huge-read":            "type=117",
	"read-past-int64":      "type=7:errno=EINVAL",
	"read-tiny-room":       "len=3",
	"write-read-only-fid":  "type=7:errno=EPERM",
	"tiny-room":            "len=3",
	"no-room":              "used:len=0",
	"flood":                "used=60",
}

// shareFile is the contents of f in the hostile guest's share.
const shareFile = "share-data"

// vsockOutcomes is what the vsock device must answer to each case of
// tests/guesthostile/vsock.go: an RST from the closed port; a flood of
// requests to closed ports, whose answers the guest does not read,
// stalls the tx queue once the device owes 512 RSTs (256 connections
// whose PATH_P dial failed, the connection limit, then the 256 replies
// it queues; the next 8 sent wait) and all are answered once rx buffers
// come; a driver that writes past its
// credit loses the connection (after the 256 KiB it had); 300 requests
// to a listening host port get the 256 connections the device allows
// and RSTs; malformed packets are refused with an RST where one can be
// addressed (op 3 to the guest port given), dropped otherwise; broken
// chains and rx buffers too small for a header need a reset, after
// which the device works.
var vsockOutcomes = map[string]string{
	"closed-port":     "op=3:ports=1>1000",
	"flood-closed":    "stalled=512:sent=520:rst=520:tx=520",
	"lying-credit":    "rst:past-256k=true",
	"conn-flood":      "response=256:rst=44",
	"malformed":       "3@5000,3@5001,3@5005",
	"desc-beyond-ram": "needs-reset",
	"rx-too-small":    "needs-reset",
	"works-after":     "op=3",
}

// netOutcomes is what the net device must answer to each case of
// tests/guesthostile/net.go: tx chains shorter than the header, without
// a readable buffer or larger than a 64 KiB frame are completed unsent;
// one outside RAM needs a reset; rx chains that cannot hold an MTU frame
// (no MRG_RXBUF) or are device-readable come back unused; echo replies
// that found no rx buffer waited in the TAP's bounded queue and came
// once buffers did; the device works after each.
var netOutcomes = map[string]string{
	"tx-short":       "used:len=0",
	"tx-no-readable": "used:len=0",
	"tx-oversized":   "used:len=0",
	"tx-beyond-ram":  "needs-reset",
	"rx-short":       "used=[0]",
	"rx-below-mtu":   "used=[0]",
	"rx-readable":    "used=[0]",
	"rx-stall":       "replies>0=true:frames<=520=true",
	"works-after":    "replies=1",
}

// The host's side of the hostile guest's TAP (gvmm.net).
const (
	netTap     = "gvhostile0"
	netHostIP  = "10.0.3.1"
	netGuestIP = "10.0.3.2"
	netHostMAC = "02:00:00:00:03:01"
	// stallCPU bounds gvmm's CPU time while the guest sleeps with echo
	// replies waiting in the TAP and no rx buffer: a VMM polling the TAP
	// would spend the whole window.
	stallWindow = 2 * time.Second
	stallCPU    = time.Second
)

// makeTap makes the hostile guest's TAP, persistent so gvmm uses it as
// it is, with the host's address, and the guest's MAC as a permanent
// neighbour: the host's echo replies need no ARP, which a hand driver
// does not answer.
func makeTap(t *testing.T) {
	t.Helper()
	hostMAC, err := net.ParseMAC(netHostMAC)
	require.NoError(t, err)
	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: netTap, HardwareAddr: hostMAC},
		Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE}
	require.NoError(t, netlink.LinkAdd(tap))
	for _, f := range tap.Fds {
		f.Close()
	}
	t.Cleanup(func() { _ = netlink.LinkDel(tap) })
	link, err := netlink.LinkByName(netTap)
	require.NoError(t, err)
	require.NoError(t, netlink.LinkSetHardwareAddr(link, hostMAC))
	// The queue where frames wait for the guest's rx buffers: tun's
	// default, set here because the guest's bound assumes it.
	require.NoError(t, netlink.LinkSetTxQLen(link, 500))
	addr, err := netlink.ParseAddr(netHostIP + "/24")
	require.NoError(t, err)
	require.NoError(t, netlink.AddrAdd(link, addr))
	require.NoError(t, netlink.LinkSetUp(link))
	require.NoError(t, netlink.NeighAdd(&netlink.Neigh{LinkIndex: link.Attrs().Index, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP(netGuestIP), HardwareAddr: machine.DefaultMAC(netTap)}))
}

// watchStall measures gvmm's CPU time over stallWindow once the guest
// reports netstall=begin.
func watchStall(v *vmm) func() (time.Duration, bool) {
	var cpu time.Duration
	measured := false
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for !v.out.Has("netstall") {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		before, err1 := cpuTime(v.cmd.Process.Pid)
		time.Sleep(stallWindow)
		after, err2 := cpuTime(v.cmd.Process.Pid)
		if err1 == nil && err2 == nil {
			cpu, measured = after-before, true
		}
	}()
	return func() (time.Duration, bool) {
		close(stop)
		<-done
		return cpu, measured
	}
}

// cpuTime reads a process's user and system time from /proc.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command, which ends at the last ')': state is
	// field 3, utime 14, stime 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100, nil // USER_HZ
}

// TestHostileGuest runs the hostile guest once, with two disks (vda is
// attacked, vdb left alone), a balloon and the control API, sampling the
// VMM's resident memory, threads and descriptors all along and querying
// the API after every phase. The guest ends with a triple fault, which
// gvmm must report as such with exit status 1.
func TestHostileGuest(t *testing.T) {
	dir := t.TempDir()
	seeds := map[string]uint64{"vda": 11, "vdb": 22}
	images := map[string]string{}
	for name, seed := range seeds {
		images[name] = filepath.Join(dir, name+".img")
		writePattern(t, images[name], seed, diskBytes)
	}
	sock := filepath.Join(dir, "api.sock")
	// The share: a file, a symlink to the host's root, a device node.
	share := filepath.Join(dir, "share")
	require.NoError(t, os.Mkdir(share, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(share, "f"), []byte(shareFile), 0o644))
	require.NoError(t, os.Symlink("/", filepath.Join(share, "out")))
	require.NoError(t, syscall.Mknod(filepath.Join(share, "null"), syscall.S_IFCHR|0o666, 1<<8|3), "the test host runs as root")
	// The guest's vsock connections to host port 7000 find a listener
	// that never accepts; no other host port has one.
	vsockDir, err := os.MkdirTemp("", "gvmm-hostile-") // short: unix socket paths are limited
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(vsockDir) })
	vsockSock := filepath.Join(vsockDir, "v.sock")
	never, err := net.Listen("unix", vsockSock+"_7000")
	require.NoError(t, err)
	t.Cleanup(func() { never.Close() })
	k := kernel(t)
	makeTap(t)
	cmdline := fmt.Sprintf("console=ttyS0 reboot=t panic=1 quiet gvmm.attack=vda gvmm.keep=vdb "+
		"gvmm.seed.vda=%d gvmm.seed.vdb=%d gvmm.mib=%d gvmm.net=%s,%s,%s",
		seeds["vda"], seeds["vdb"], diskBytes/mib, netGuestIP, netHostIP, netHostMAC)
	if extra := os.Getenv(envGuestArgs); extra != "" {
		cmdline += " " + extra
		t.Logf("%s: %s", envGuestArgs, extra)
	}
	start := time.Now()
	v := startVMM(t, "run", "--kernel", k.Vmlinuz, "--initrd", guestInitrd(t), "--memory", strconv.Itoa(guestMiB)+"M",
		"--cmdline", cmdline, "--disk", images["vda"], "--disk", images["vdb"], "--balloon", "--api-socket", sock,
		"--share", share+",tag=hostile", "--vsock", "cid=3,socket="+vsockSock, "--net", "tap="+netTap)
	samples := sample(v)
	apiStates := watchPhases(v, sock)
	stall := watchStall(v)
	r := v.wait(t)
	res, states := samples(), apiStates()
	stallCPUTime, stallMeasured := stall()
	elapsed := time.Since(start)

	t.Logf("gvmm ran %s; peak VmRSS %d MiB (VmHWM %d MiB) for %d MiB of guest RAM, %d threads, %d fds; stderr %d bytes",
		elapsed.Round(time.Second), res.rssKB>>10, res.hwmKB>>10, guestMiB, res.threads, res.fds, len(r.stderr))
	t.Logf("gvmm's log messages by count:\n%s", topLines(r.stderr, 12))
	for _, p := range r.values("phase") {
		t.Logf("phase %s", p)
	}
	for _, key := range []string{"functions", "kmsg", "mmio", "config", "overlap", "bar", "msix"} {
		for _, val := range r.values(key) {
			t.Logf("%s: %s", key, val)
		}
	}

	requireNoPanic(t, r)
	assert.Empty(t, r.values("error"), "the guest reported errors\n%s", r)
	var got []string
	for _, p := range r.values("phase") {
		name, _, _ := strings.Cut(p, " ")
		got = append(got, name)
	}
	require.Equal(t, phases, got, "phases the guest reported\n%s", r)
	assert.Equal(t, []string{"triple-fault"}, r.values("breaking"), "%s", r)

	t.Run("exits 1 naming the triple fault", func(t *testing.T) {
		assert.Equal(t, 1, r.status, "%s", r)
		assert.Contains(t, r.stderr, "triple fault")
	})
	t.Run("control API answered after every phase", func(t *testing.T) {
		for _, p := range phases {
			assert.Equal(t, "running", states[p], "GET /vm after phase %s", p)
		}
		assert.Equal(t, "paused", states["storm+pause"], "PUT /vm/pause during the attack")
	})
	t.Run("queue attacks refused, device usable after each", func(t *testing.T) {
		outcomes := map[string]string{}
		for _, val := range r.values("vq") {
			name, out, _ := strings.Cut(val, ":")
			outcomes[name] = out
		}
		assert.Equal(t, queueOutcomes, outcomes)
	})
	t.Run("share attacks refused, share usable after", func(t *testing.T) {
		outcomes := map[string]string{}
		for _, val := range r.values("p9") {
			name, out, _ := strings.Cut(val, ":")
			outcomes[name] = out
		}
		assert.Equal(t, shareOutcomes, outcomes)
		assert.Equal(t, []string{"524288"}, r.values("p9msize"), "msize capped at 512 KiB")
		assert.Equal(t, []string{shareFile}, r.values("p9read"))
		assert.Equal(t, []string{shareFile}, r.values("p9mount"))
		entries, err := os.ReadDir(share)
		require.NoError(t, err)
		assert.Len(t, entries, 3, "the guest changed the share")
	})
	t.Run("vsock attacks refused, device usable after each", func(t *testing.T) {
		outcomes := map[string]string{}
		for _, val := range r.values("vs") {
			name, out, _ := strings.Cut(val, ":")
			outcomes[name] = out
		}
		assert.Equal(t, vsockOutcomes, outcomes)
	})
	t.Run("net attacks refused, no spinning without rx buffers, device usable after each", func(t *testing.T) {
		outcomes := map[string]string{}
		for _, val := range r.values("net") {
			name, out, _ := strings.Cut(val, ":")
			outcomes[name] = out
		}
		assert.Equal(t, netOutcomes, outcomes)
		require.True(t, stallMeasured, "gvmm's CPU time was not measured during the stall")
		t.Logf("gvmm's CPU time over %s of stalled rx: %s", stallWindow, stallCPUTime)
		assert.Less(t, stallCPUTime, stallCPU, "gvmm's CPU time while rx waited for buffers")
		assert.Equal(t, "rx_dropped=3:tx_dropped=3:tx_packets>=1500=true", states["net-stats"], "GET /vm after the net phase")
	})
	t.Run("MSI-X held while masked, delivered when unmasked", func(t *testing.T) {
		msix := r.values("msix")
		assert.Len(t, msix, 2, "the attacked disk and the balloon")
		for _, v := range msix {
			assert.True(t, strings.HasSuffix(v, ":signals=50 pending=50 delivered=50"), "%s", v)
		}
	})
	t.Run("attacked disk works again, kept disk intact", func(t *testing.T) {
		assert.Equal(t, []string{"vda:ok"}, r.values("recovered"), "%s", r)
		assert.Equal(t, []string{"vdb:ok"}, r.values("verify"), "%s", r)
		for name, seed := range seeds {
			assert.Equal(t, patternSum(seed, diskBytes), fileSum(t, images[name]), "%s was changed", name)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		assert.LessOrEqual(t, res.rssKB, int64(guestMiB+rssSlackMiB)<<10, "peak VmRSS (KiB)")
		assert.LessOrEqual(t, res.hwmKB, int64(guestMiB+rssSlackMiB)<<10, "VmHWM (KiB)")
		assert.LessOrEqual(t, res.threads, maxThreads, "threads")
		assert.LessOrEqual(t, res.fds, maxFDs, "open descriptors")
		assert.LessOrEqual(t, len(r.stderr), maxStderr, "stderr bytes; its most frequent messages:\n%s", topLines(r.stderr, 8))
		// One line per toggle of the overlapping BARs before the VMM
		// limited it; its budget allows two windows in the phase.
		assert.LessOrEqual(t, strings.Count(r.stderr, `msg="virtio notify eventfd"`), 2*ratelog.Burst,
			"the guest toggled overlapping BARs %v", r.values("overlap"))
	})
}

// netStats summarises the net device's counters in GET /vm.
func netStats(c *api.Client) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := c.Info(ctx)
	if err != nil {
		return "error: " + err.Error()
	}
	if len(info.Nets) != 1 {
		return fmt.Sprintf("%d nets", len(info.Nets))
	}
	n := info.Nets[0]
	return fmt.Sprintf("rx_dropped=%d:tx_dropped=%d:tx_packets>=1500=%t", n.RxDropped, n.TxDropped, n.TxPackets >= 1500)
}

// requireNoPanic fails on a Go panic or runtime error in gvmm's output.
func requireNoPanic(t *testing.T, r result) {
	t.Helper()
	for _, s := range []string{"panic:", "goroutine ", "fatal error:", "SIGSEGV"} {
		require.NotContains(t, r.stderr, s, "gvmm crashed\n%s", r)
	}
}

// TestGuestBreaksItself boots hand-made PVH kernels (32-bit code entered
// with paging off) that end the machine at once, and checks gvmm's exit
// status and message for each; the last sweeps unclaimed ports and
// addresses at debug level, where the buses log each unclaimed address
// once, at most 4096 per bus.
func TestGuestBreaksItself(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   []byte
		args   []string
		status int
		msg    string
	}{
		{"triple fault", tripleFault, nil, 1, "triple fault"},
		{"execute from the MMIO hole", execMMIO, nil, 1, "KVM internal error: instruction emulation failed"},
		{"i8042 reset", i8042Reset, nil, 0, "reboot"},
		{"ACPI soft-off", acpiPowerOff, nil, 0, "power"},
		{"unclaimed sweep, then triple fault", unclaimedSweep, []string{"--log-level", "debug"}, 1, "triple fault"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kernel := filepath.Join(t.TempDir(), "payload.elf")
			require.NoError(t, os.WriteFile(kernel, payload.PVH(tc.code), 0o644))
			start := time.Now()
			r := startVMM(t, append([]string{"run", "--kernel", kernel, "--memory", "64M"}, tc.args...)...).wait(t)
			t.Logf("%s: exit %d after %s, stderr %d bytes", tc.name, r.status, time.Since(start).Round(time.Millisecond), len(r.stderr))
			requireNoPanic(t, r)
			assert.Equal(t, tc.status, r.status, "%s", r)
			assert.Contains(t, r.stderr, tc.msg)
			if tc.args != nil {
				for _, bus := range []string{"pio", "mmio"} {
					addrs := unclaimed(r.stderr, bus)
					t.Logf("%s: %d unclaimed-access lines", bus, len(addrs))
					assert.Len(t, addrs, missedLimit, "%s: lines of unclaimed accesses, at most %d", bus, missedLimit)
					for a, n := range addrs {
						if !assert.Equal(t, 1, n, "%s: unclaimed access at %s logged more than once", bus, a) {
							break
						}
					}
				}
				assert.Less(t, len(r.stderr), 2<<20)
				// At debug level, a fault shows the vCPU's registers.
				assert.Contains(t, r.stderr, `msg="vcpu registers"`)
				assert.Contains(t, r.stderr, `msg="vcpu system registers"`)
			}
		})
	}
}

// TestRebootLoop boots a guest that resets the machine as soon as it
// runs, with --on-reboot restart: gvmm builds a new VM for each boot, and
// its descriptors, threads and memory must not grow with the count. The
// control API stops it.
func TestRebootLoop(t *testing.T) {
	dir := t.TempDir()
	kernel, sock := filepath.Join(dir, "payload.elf"), filepath.Join(dir, "api.sock")
	require.NoError(t, os.WriteFile(kernel, payload.PVH(i8042Reset), 0o644))
	v := startVMM(t, "run", "--kernel", kernel, "--memory", "64M", "--on-reboot", "restart", "--api-socket", sock)
	reboots := func() int { return strings.Count(v.errb.String(), "guest rebooted") }
	waitReboots := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); reboots() < n; time.Sleep(20 * time.Millisecond) {
			require.True(t, time.Now().Before(deadline), "%d reboots after a minute\n%s", reboots(), v.errb.String())
		}
	}
	waitReboots(5)
	early := snapshot(v)
	waitReboots(105)
	late := snapshot(v)
	c := api.NewClient(sock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.Stop(ctx))
	r := v.wait(t)
	t.Logf("%d reboots; after 5: %+v, after 105: %+v", reboots(), early, late)
	requireNoPanic(t, r)
	assert.Equal(t, 0, r.status, "%s", r)
	assert.LessOrEqual(t, late.fds, early.fds+2, "descriptors")
	assert.LessOrEqual(t, late.threads, early.threads+2, "threads")
	assert.LessOrEqual(t, late.rssKB, early.rssKB+16<<10, "VmRSS (KiB)")
}

// snapshot reads the VMM's usage once.
func snapshot(v *vmm) usage {
	pid := v.cmd.Process.Pid
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return usage{rssKB: statusField(status, "VmRSS"), hwmKB: statusField(status, "VmHWM"),
		threads: int(statusField(status, "Threads")), fds: len(fds)}
}

// missedLimit is how many unclaimed addresses a bus logs (devices/bus.go).
const missedLimit = 4096

var unclaimedLine = regexp.MustCompile(`msg="unclaimed access" bus=(\w+) .*addr=(0x[0-9a-f]+)`)

// unclaimed counts the debug lines of unclaimed accesses on bus by address.
func unclaimed(log, bus string) map[string]int {
	out := map[string]int{}
	for _, m := range unclaimedLine.FindAllStringSubmatch(log, -1) {
		if m[1] == bus {
			out[m[2]]++
		}
	}
	return out
}

// Payloads, 32-bit code at payload.Entry (assembled with GNU as; the bytes
// follow their listing).
var (
	// lidt [payload.Entry+0x100] (an empty IDT: the 6 zero bytes there); int3:
	// the breakpoint cannot be delivered, nor the #GP, nor the #DF.
	tripleFault = []byte{
		0x0f, 0x01, 0x1d, 0x00, 0x01, 0x20, 0x00, // lidt 0x200100
		0xcc, // int3
	}
	// mov eax, 0xc0000000; jmp eax: fetch instructions where no RAM is.
	execMMIO = []byte{
		0xb8, 0x00, 0x00, 0x00, 0xc0, // mov eax, 0xc0000000
		0xff, 0xe0, // jmp eax
	}
	// mov al, 0xfe; out 0x64, al: pulse the reset line; hlt forever.
	i8042Reset = []byte{
		0xb0, 0xfe, // mov al, 0xfe
		0xe6, 0x64, // out 0x64, al
		0xf4,       // hlt
		0xeb, 0xfd, // jmp hlt
	}
	// mov dx, 0x604; mov ax, SLP_EN | SLP_TYP=5; out dx, ax: ACPI S5.
	acpiPowerOff = []byte{
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604
		0x66, 0xb8, 0x00, 0x34, // mov ax, 0x3400
		0x66, 0xef, // out dx, ax
		0xf4,       // hlt
		0xeb, 0xfd, // jmp hlt
	}
	// Read ports 0x1000-0x17ff twice, then 0x1800-0x27ff once; read a
	// dword in each of the 2048 pages from 256 MiB up (no RAM there with
	// 64 MiB) twice, then in the 4096 pages after once. Each bus sees
	// 2048 unclaimed addresses twice, then more than its log allows.
	// Then the triple fault.
	unclaimedSweep = []byte{
		0xb9, 0x02, 0x00, 0x00, 0x00, // mov ecx, 2
		0xba, 0x00, 0x10, 0x00, 0x00, // a: mov edx, 0x1000
		0xec,                               // b: in al, dx
		0x42,                               // inc edx
		0x81, 0xfa, 0x00, 0x18, 0x00, 0x00, // cmp edx, 0x1800
		0x72, 0xf6, // jb b
		0xe2, 0xef, // loop a
		0xec,                               // c: in al, dx
		0x42,                               // inc edx
		0x81, 0xfa, 0x00, 0x28, 0x00, 0x00, // cmp edx, 0x2800
		0x72, 0xf6, // jb c
		0xb9, 0x02, 0x00, 0x00, 0x00, // mov ecx, 2
		0xbe, 0x00, 0x00, 0x00, 0x10, // e: mov esi, 0x10000000
		0x8b, 0x06, // f: mov eax, [esi]
		0x81, 0xc6, 0x00, 0x10, 0x00, 0x00, // add esi, 0x1000
		0x81, 0xfe, 0x00, 0x00, 0x80, 0x10, // cmp esi, 0x10800000
		0x72, 0xf0, // jb f
		0xe2, 0xe9, // loop e
		0x8b, 0x06, // g: mov eax, [esi]
		0x81, 0xc6, 0x00, 0x10, 0x00, 0x00, // add esi, 0x1000
		0x81, 0xfe, 0x00, 0x00, 0x80, 0x11, // cmp esi, 0x11800000
		0x72, 0xf0, // jb g
		0x0f, 0x01, 0x1d, 0x00, 0x01, 0x20, 0x00, // lidt 0x200100
		0xcc, // int3
	}
)

func kernel(t *testing.T) *debkernel.Kernel {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	return k
}

// guestInitrd builds the hostile guest's initramfs: guesthostile as
// /init and the modules it loads, in load order.
func guestInitrd(t *testing.T) string {
	t.Helper()
	mods, err := kernel(t).Modules(guestModules...)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "guest.cpio")
	require.NoError(t, initramfs.WriteGuest(p, kvmhost.Asset("guesthostile"), mods))
	return p
}

func writePattern(t *testing.T, path string, seed uint64, n int64) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	_, err = io.Copy(f, pattern.Reader(seed, 0, n))
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func patternSum(seed uint64, n int64) [32]byte {
	h := sha256.New()
	_, _ = io.Copy(h, pattern.Reader(seed, 0, n))
	return [32]byte(h.Sum(nil))
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(data)
}

// vmm is a running gvmm whose output is recorded live.
type vmm struct {
	cmd  *exec.Cmd
	ctx  context.Context
	out  *guest.Recorder
	errb *guest.Recorder
}

func startVMM(t *testing.T, args ...string) *vmm {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	v := &vmm{cmd: exec.CommandContext(ctx, kvmhost.Asset("gvmm"), args...), ctx: ctx,
		out: &guest.Recorder{}, errb: &guest.Recorder{}}
	v.cmd.Stdout, v.cmd.Stderr = v.out, v.errb
	v.cmd.WaitDelay = 5 * time.Second
	require.NoError(t, v.cmd.Start())
	t.Cleanup(func() {
		cancel()
		if v.cmd.ProcessState == nil {
			_ = v.cmd.Process.Kill()
			_ = v.cmd.Wait()
		}
	})
	return v
}

type result struct {
	status int
	stdout string
	stderr string
	rec    *guest.Recorder
}

func (r result) String() string {
	out := r.stdout
	if len(out) > 32<<10 {
		out = "...\n" + out[len(out)-32<<10:]
	}
	errs := r.stderr
	if len(errs) > 16<<10 {
		errs = errs[:8<<10] + "\n...\n" + errs[len(errs)-8<<10:]
	}
	return "--- gvmm stdout (guest console) ---\n" + out + "--- gvmm stderr ---\n" + errs
}

func (r result) values(key string) []string { return r.rec.Values(key) }

func (v *vmm) wait(t *testing.T) result {
	t.Helper()
	err := v.cmd.Wait()
	r := result{stdout: v.out.String(), stderr: v.errb.String(), rec: v.out}
	require.NoError(t, v.ctx.Err(), "gvmm did not finish in %s\n%s", runTimeout, r)
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.status = exit.ExitCode()
	case err != nil:
		t.Fatalf("running gvmm: %v\n%s", err, r)
	}
	return r
}

// usage is the peak of what sample saw of the VMM process.
type usage struct {
	rssKB, hwmKB int64
	threads, fds int
}

// sample reads the VMM's VmRSS, VmHWM, thread count and open descriptors
// every 200 ms until it exits; the returned function stops sampling and
// returns the peaks.
func sample(v *vmm) func() usage {
	var (
		mu   sync.Mutex
		peak usage
		stop = make(chan struct{})
		done = make(chan struct{})
	)
	pid := v.cmd.Process.Pid
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err == nil {
				fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
				mu.Lock()
				peak.rssKB = max(peak.rssKB, statusField(status, "VmRSS"))
				peak.hwmKB = max(peak.hwmKB, statusField(status, "VmHWM"))
				peak.threads = max(peak.threads, int(statusField(status, "Threads")))
				peak.fds = max(peak.fds, len(fds))
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() usage {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

var statusLine = regexp.MustCompile(`(?m)^(\w+):\s+(\d+)`)

// statusField returns a number of /proc/PID/status (kB for sizes).
func statusField(status []byte, name string) int64 {
	for _, m := range statusLine.FindAllSubmatch(status, -1) {
		if string(m[1]) == name {
			n, _ := strconv.ParseInt(string(m[2]), 10, 64)
			return n
		}
	}
	return 0
}

// watchPhases asks the control API for the VM's state each time the
// guest reports a phase done, and pauses and resumes the VM once, after
// the storm; the returned function gives the states by phase.
func watchPhases(v *vmm, sock string) func() map[string]string {
	states := map[string]string{}
	c := api.NewClient(sock)
	query := func(key string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		info, err := c.Info(ctx)
		state := info.State
		if err != nil {
			state = "error: " + err.Error()
		}
		states[key] = state
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer c.Close()
		seen := 0
		for {
			ps := v.out.Values("phase")
			for ; seen < len(ps); seen++ {
				name, _, _ := strings.Cut(ps[seen], " ")
				query(name)
				if name == "net" {
					states["net-stats"] = netStats(c)
				}
				if name == "storm" {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					if err := c.Pause(ctx); err == nil {
						query("storm+pause")
						_ = c.Resume(ctx)
					}
					cancel()
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() map[string]string {
		close(stop)
		<-done
		return states // the goroutine is done with it
	}
}

var logMsg = regexp.MustCompile(`msg=("[^"]*"|\S+)`)

// topLines returns the most frequent messages of a log and their counts.
func topLines(log string, n int) string {
	counts := map[string]int{}
	for _, m := range logMsg.FindAllStringSubmatch(log, -1) {
		counts[m[1]]++
	}
	msgs := make([]string, 0, len(counts))
	for m := range counts {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool { return counts[msgs[i]] > counts[msgs[j]] })
	var b strings.Builder
	for _, m := range msgs[:min(n, len(msgs))] {
		fmt.Fprintf(&b, "%8d %s\n", counts[m], m)
	}
	return b.String()
}
