package net_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/tests/internal/vmmproc"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire/wiretest"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

const (
	snapTap  = "gvsnap0"  // gvmm creates it at run, and again at restore
	cloneTap = "gvclone0" // the clone's, which gvmm creates
	// Each connection's bytes: half before the snapshot, half after.
	snapBytes = 8 << 20
	// resumeTimeout bounds a connection's recovery after the restore:
	// the host's TCP retransmits back off to tens of seconds while the
	// TAP is gone.
	resumeTimeout = 5 * time.Minute
	// downtime is how long the guest is gone between the VMM's end and
	// the restore, as a real one would be.
	downtime = 2 * time.Second
)

// TestSnapshotKeepsTCPConnections: a guest on a TAP holds two TCP
// connections with the host, each mid-transfer, one each way. Its
// snapshot is restored in a new process onto the same TAP (created
// again) after a downtime in which the host sent more (lost, then
// retransmitted), and both connections carry the rest of their bytes,
// intact: the sums cover each connection's whole stream, so they are
// the same connections, not new ones. A clone of the snapshot onto another TAP
// (--net tap=OTHER) then serves a new connection through that TAP.
func TestSnapshotKeepsTCPConnections(t *testing.T) {
	kernel, initrd := guestInitrd(t)
	br := makeBridge(t)
	dir := t.TempDir()
	snap := filepath.Join(dir, "snap")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	a := vmmproc.Start(t, 20*time.Minute, kvmhost.Asset("gvmm"), "run", "--kernel", kernel, "--initrd", initrd,
		"--cmdline", cmdline+" gvmm.ip="+guestAIP+prefix+" gvmm.host="+hostIP,
		"--memory", "256M", "--net", "tap="+snapTap, "--api-socket", filepath.Join(dir, "a.sock"))
	attach(t, a, snapTap, br)
	assert.Equal(t, "ok", a.WaitFor(t, "ping", bootTimeout))
	a.WaitFor(t, "ready", bootTimeout)

	// Host to guest: the first half to the sink, which sums the stream
	// until EOF.
	var d net.Dialer
	sink, err := d.DialContext(ctx, "tcp4", fmt.Sprintf("%s:%d", guestAIP, vsockwire.PortSink))
	require.NoError(t, err)
	defer sink.Close()
	require.NoError(t, sink.SetDeadline(time.Now().Add(20*time.Minute)))
	require.NoError(t, writePattern(sink, 0, snapBytes/2))
	// Guest to host: the source sends all it was asked for; the host
	// reads half, and the guest's send buffer and the host's receive
	// window hold more, in flight, when the snapshot is taken.
	source, err := d.DialContext(ctx, "tcp4", fmt.Sprintf("%s:%d", guestAIP, vsockwire.PortSource))
	require.NoError(t, err)
	defer source.Close()
	require.NoError(t, source.SetDeadline(time.Now().Add(20*time.Minute)))
	_, err = fmt.Fprintf(source, "%d\n", snapBytes)
	require.NoError(t, err)
	fromGuest := sha256.New()
	_, err = io.CopyN(fromGuest, source, snapBytes/2)
	require.NoError(t, err)

	ca := api.NewClient(filepath.Join(dir, "a.sock"))
	defer ca.Close()
	require.NoError(t, ca.Pause(ctx))
	require.NoError(t, ca.Snapshot(ctx, snap))
	a.Kill()
	_, err = netlink.LinkByName(snapTap)
	require.Error(t, err, "%s outlived the VMM that created it", snapTap)

	t.Run("another count of TAPs is refused", func(t *testing.T) {
		vm := vmmproc.Start(t, time.Minute, kvmhost.Asset("gvmm"), "run", "--restore", snap,
			"--net", "tap=gvx0", "--net", "tap=gvx1")
		<-vm.Exited
		assert.False(t, vm.Cmd.ProcessState.Success())
		assert.Contains(t, vm.Err.String(), "the snapshot has 1 network devices, 2 TAPs given")
	})

	// The second half goes out while the guest is nowhere: its frames
	// are lost, and the host's TCP retransmits them after the restore.
	retransBefore := totalRetrans(t, sink)
	written := make(chan error, 1)
	go func() { written <- writePattern(sink, snapBytes/2, snapBytes/2) }()
	time.Sleep(downtime)

	// The restore opens the snapshot's TAP by name, creating it again.
	restoreStart := time.Now()
	b := vmmproc.Start(t, 20*time.Minute, kvmhost.Asset("gvmm"), "run", "--restore", snap, "--api-socket", filepath.Join(dir, "b.sock"))
	attach(t, b, snapTap, br)
	require.NoError(t, <-written)
	require.NoError(t, sink.(*net.TCPConn).CloseWrite())
	require.NoError(t, sink.SetDeadline(time.Now().Add(resumeTimeout)))
	answer, err := bufio.NewReader(sink).ReadString('\n')
	require.NoError(t, err, "the sink's answer on the connection from before the snapshot")
	assert.Equal(t, fmt.Sprintf("%d %s\n", snapBytes, vsockwire.PatternSum(snapBytes)), answer, "host to guest, intact")
	t.Logf("host to guest connection done %v after the restore began", time.Since(restoreStart).Round(time.Millisecond))
	retrans := totalRetrans(t, sink) - retransBefore
	t.Logf("the host retransmitted %d segments on it", retrans)
	assert.Positive(t, retrans, "frames sent while the guest was down were lost and sent again")

	require.NoError(t, source.SetDeadline(time.Now().Add(resumeTimeout)))
	n, err := io.Copy(fromGuest, source)
	require.NoError(t, err)
	assert.Equal(t, int64(snapBytes/2), n, "the rest of the guest's stream")
	assert.Equal(t, vsockwire.PatternSum(snapBytes), hex.EncodeToString(fromGuest.Sum(nil)), "guest to host, intact")

	cb := api.NewClient(filepath.Join(dir, "b.sock"))
	defer cb.Close()
	info, err := cb.Info(ctx)
	require.NoError(t, err)
	require.Len(t, info.Nets, 1)
	assert.Equal(t, snapTap, info.Nets[0].ID)
	assert.Equal(t, machine.DefaultMAC(snapTap).String(), info.Nets[0].MAC)
	assert.Positive(t, info.Nets[0].RxBytes, "the restored device received")
	assert.Positive(t, info.Nets[0].TxBytes, "the restored device sent")
	b.Kill()

	// A clone on its own TAP: the snapshot's is gone with b, so the
	// clone's traffic has no other way.
	c := vmmproc.Start(t, 20*time.Minute, kvmhost.Asset("gvmm"), "run", "--restore", snap,
		"--net", "tap="+cloneTap, "--api-socket", filepath.Join(dir, "c.sock"))
	attach(t, c, cloneTap, br)
	wiretest.ToGuest(t, tcp(guestAIP), 1<<20)
	cc := api.NewClient(filepath.Join(dir, "c.sock"))
	defer cc.Close()
	info, err = cc.Info(ctx)
	require.NoError(t, err)
	require.Len(t, info.Nets, 1)
	assert.Equal(t, cloneTap, info.Nets[0].ID)
	assert.Equal(t, machine.DefaultMAC(snapTap).String(), info.Nets[0].MAC, "the snapshot's MAC, which the guest keeps")
	assert.GreaterOrEqual(t, info.Nets[0].RxBytes, uint64(1<<20), "the clone's device received the connection's bytes")
	c.Kill()
	_, err = netlink.LinkByName(cloneTap)
	assert.Error(t, err, "%s outlived the clone", cloneTap)
}

// totalRetrans is the count of segments the host's TCP retransmitted on
// c.
func totalRetrans(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	var info *unix.TCPInfo
	var serr error
	require.NoError(t, rc.Control(func(fd uintptr) { info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }))
	require.NoError(t, serr)
	return info.Total_retrans
}

// attach waits for the TAP the VMM creates and puts it on the bridge.
func attach(t *testing.T, vm *vmmproc.Proc, tap string, br netlink.Link) {
	t.Helper()
	link := vm.WaitForLink(t, tap, time.Minute)
	require.NoError(t, netlink.LinkSetMaster(link, br))
}

// writePattern writes n bytes of the pattern from offset off.
func writePattern(w io.Writer, off, n uint64) error {
	buf := make([]byte, 64<<10)
	for end := off + n; off < end; {
		k := min(uint64(len(buf)), end-off)
		vsockwire.Pattern(buf[:k], off)
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		off += k
	}
	return nil
}
