package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

func TestSpecNetns(t *testing.T) {
	assert.Empty(t, specNetns(&specs.Spec{}))
	assert.Empty(t, specNetns(&specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}}}), "a new namespace: no network")
	assert.Equal(t, "/var/run/netns/x", specNetns(&specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
		{Type: specs.PIDNamespace, Path: "/proc/1/ns/pid"}, {Type: specs.NetworkNamespace, Path: "/var/run/netns/x"}}}}))
}

// The pod's network as CNI leaves it (a veth with an address and a
// default route in a namespace) becomes a TAP beside the veth, with tc
// redirecting every frame both ways, and the guest's configuration; its
// close leaves the veth as it was, and the TAP goes with its descriptor.
func TestOpenNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("a network namespace needs root")
	}
	path, h := testNetns(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1400}, PeerName: "peer0"}
	require.NoError(t, h.LinkAdd(veth))
	link, err := h.LinkByName("eth0")
	require.NoError(t, err)
	addr, err := netlink.ParseAddr("10.88.0.5/16")
	require.NoError(t, err)
	require.NoError(t, h.AddrAdd(link, addr))
	require.NoError(t, h.LinkSetUp(link))
	// The peer goes to the test's namespace, as CNI's host end does.
	peer, err := h.LinkByName("peer0")
	require.NoError(t, err)
	self, err := netns.Get()
	require.NoError(t, err)
	defer self.Close()
	require.NoError(t, h.LinkSetNsFd(peer, int(self)))
	t.Cleanup(func() { _ = netlink.LinkDel(peer) })
	require.NoError(t, h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("10.88.0.1")}))

	n, err := openNetwork(path)
	require.NoError(t, err)
	assert.Equal(t, link.Attrs().HardwareAddr, n.mac)
	assert.Equal(t, agent.Network{MAC: link.Attrs().HardwareAddr.String(), MTU: 1400,
		Addrs: []string{"10.88.0.5/16"}, Routes: []agent.Route{{Gw: "10.88.0.1"}}}, n.guest)

	tap, err := h.LinkByName(tapName)
	require.NoError(t, err, "the TAP is in the pod's namespace")
	assert.Equal(t, 1400, tap.Attrs().MTU)
	assert.NotZero(t, tap.Attrs().Flags&net.FlagUp)
	for from, to := range map[netlink.Link]int{link: tap.Attrs().Index, tap: link.Attrs().Index} {
		filters, err := h.FilterList(from, ingress)
		require.NoError(t, err)
		require.Len(t, filters, 1, "%s's ingress filter", from.Attrs().Name)
		u32, ok := filters[0].(*netlink.U32)
		require.True(t, ok, "%T", filters[0])
		require.Len(t, u32.Actions, 1)
		mirred, ok := u32.Actions[0].(*netlink.MirredAction)
		require.True(t, ok, "%T", u32.Actions[0])
		assert.Equal(t, to, mirred.Ifindex, "%s's frames go to the other", from.Attrs().Name)
		assert.Equal(t, netlink.TCA_EGRESS_REDIR, mirred.MirredAction)
	}
	_, err = netlink.LinkByName(tapName)
	assert.Error(t, err, "no TAP in the shim's own namespace")

	require.NoError(t, n.close())
	n.tap.Close()
	qdiscs, err := h.QdiscList(link)
	require.NoError(t, err)
	for _, q := range qdiscs {
		assert.NotEqual(t, "ingress", q.Type(), "the veth's ingress qdisc is left")
	}
	_, err = h.LinkByName(tapName)
	assert.Error(t, err, "the TAP goes with its descriptor")
}

func TestOpenNetworkWithoutAnInterface(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("a network namespace needs root")
	}
	path, _ := testNetns(t)
	_, err := openNetwork(path)
	assert.ErrorContains(t, err, "no Ethernet interface")
	_, err = openNetwork(filepath.Join(t.TempDir(), "none"))
	assert.Error(t, err)
}

// testNetns makes a named network namespace for the test and a netlink
// handle in it.
func testNetns(t *testing.T) (string, *netlink.Handle) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	require.NoError(t, err)
	defer orig.Close()
	name := fmt.Sprintf("gvmm-shim-test-%d", os.Getpid())
	ns, err := netns.NewNamed(name)
	require.NoError(t, err)
	require.NoError(t, netns.Set(orig))
	t.Cleanup(func() {
		ns.Close()
		assert.NoError(t, netns.DeleteNamed(name))
	})
	h, err := netlink.NewHandleAt(ns)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return filepath.Join("/run/netns", name), h // where netns.NewNamed binds it
}
