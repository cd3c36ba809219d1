package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

// tapName is the TAP the shim makes in the pod's network namespace.
const tapName = "tap0_gvmm"

// ingress is the ingress qdisc's handle, the parent of its filters.
var ingress = netlink.MakeHandle(0xffff, 0)

// podNetwork is the network a container's spec names (CRI's pod
// namespace, set up by CNI) carried into the VM as Kata's "tcfilter"
// mode does: a TAP in the namespace, and tc redirecting every frame
// between it and the namespace's interface both ways, so the guest's
// interface takes the place of the namespace's, with its MAC, addresses,
// routes and MTU. The TAP is not persistent: it goes when the VMM's
// descriptor closes, at the VM's end or the shim's death.
type podNetwork struct {
	tap   *os.File
	mac   net.HardwareAddr
	guest agent.Network
	// nl is a netlink socket in the namespace, opened there: the
	// teardown runs under the shim's seccomp filter, which neither
	// joins namespaces nor opens sockets other than unix ones.
	nl   *netlink.Handle
	link int // the namespace's interface
}

// specNetns is the path of the network namespace the spec joins, "" for
// none (the container gets no network device).
func specNetns(spec *specs.Spec) string {
	if spec.Linux == nil {
		return ""
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// inNetns runs f on a thread in the network namespace at path. The
// thread goes back to the shim's namespace after, or, if it cannot,
// ends with its goroutine instead of serving others.
func inNetns(path string, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("the shim's network namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("network namespace %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("joining network namespace %s: %w", path, err)
			return
		}
		err = f()
		if serr := netns.Set(orig); serr != nil {
			done <- errors.Join(err, fmt.Errorf("back to the shim's network namespace: %w", serr))
			return // the thread stays locked and ends with the goroutine
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}

// openNetwork sets the TAP and its redirections up in the network
// namespace at path.
func openNetwork(path string) (*podNetwork, error) {
	var n *podNetwork
	err := inNetns(path, func() (err error) {
		n, err = tapInNamespace()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("the pod's network (%s): %w", path, err)
	}
	return n, nil
}

// podLink is the namespace's interface that the guest takes over: its
// first Ethernet one with an address that is not link-local (CNI's veth
// has the pod's), else its first Ethernet one.
func podLink() (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var first netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || len(a.HardwareAddr) != 6 || l.Type() == "tuntap" {
			continue
		}
		if first == nil {
			first = l
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("%s's addresses: %w", a.Name, err)
		}
		for _, addr := range addrs {
			if !addr.IP.IsLinkLocalUnicast() {
				return l, nil
			}
		}
	}
	if first == nil {
		return nil, errors.New("no Ethernet interface in the namespace")
	}
	return first, nil
}

func tapInNamespace() (_ *podNetwork, err error) {
	link, err := podLink()
	if err != nil {
		return nil, err
	}
	a := link.Attrs()
	n := &podNetwork{mac: a.HardwareAddr, link: a.Index,
		guest: agent.Network{MAC: a.HardwareAddr.String(), MTU: a.MTU}}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("%s's addresses: %w", a.Name, err)
	}
	for _, addr := range addrs {
		if !addr.IP.IsLinkLocalUnicast() { // the guest makes its own
			n.guest.Addrs = append(n.guest.Addrs, addr.IPNet.String())
		}
	}
	routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("%s's routes: %w", a.Name, err)
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || (r.Dst != nil && (r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast())) {
			continue // the guest's kernel makes these from its addresses
		}
		var route agent.Route
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones > 0 { // else the default route
				route.Dst = r.Dst.String()
			}
		}
		if r.Gw != nil {
			route.Gw = r.Gw.String()
		}
		n.guest.Routes = append(n.guest.Routes, route)
	}

	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tapName}, Mode: netlink.TUNTAP_MODE_TAP,
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR, Queues: 1, NonPersist: true}
	if err := netlink.LinkAdd(tap); err != nil {
		return nil, fmt.Errorf("the TAP: %w", err)
	}
	n.tap = tap.Fds[0]
	defer func() {
		if err != nil {
			n.tap.Close() // the TAP goes with it, and its qdisc
			_ = netlink.QdiscDel(ingressOf(n.link))
		}
	}()
	if err := netlink.LinkSetMTU(tap, a.MTU); err != nil {
		return nil, fmt.Errorf("the TAP's MTU: %w", err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		return nil, fmt.Errorf("the TAP: %w", err)
	}
	for _, p := range [][2]int{{n.link, tap.Index}, {tap.Index, n.link}} {
		if err := netlink.QdiscAdd(ingressOf(p[0])); err != nil {
			return nil, fmt.Errorf("an ingress qdisc: %w", err)
		}
		// A u32 filter without a selector matches every frame; cls_u32
		// is in every kernel that has tc, where matchall may not be.
		filter := &netlink.U32{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: p[0], Parent: ingress, Priority: 1, Protocol: unix.ETH_P_ALL},
			Actions:     []netlink.Action{netlink.NewMirredAction(p[1])},
		}
		if err := netlink.FilterAdd(filter); err != nil {
			return nil, fmt.Errorf("a redirecting filter: %w", err)
		}
	}
	if n.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("a netlink socket: %w", err)
	}
	return n, nil
}

func ingressOf(link int) *netlink.Ingress {
	return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link, Parent: netlink.HANDLE_INGRESS, Handle: ingress}}
}

// close removes the redirection from the namespace's interface, which
// outlives the VM; the TAP went with the VM's descriptor.
func (n *podNetwork) close() error {
	defer n.nl.Close()
	if err := n.nl.QdiscDel(ingressOf(n.link)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("removing the pod interface's ingress qdisc: %w", err)
	}
	return nil
}

// removeNetwork is shim delete's close, after the shim died: it removes
// the ingress qdisc (and its redirection) of the namespace's interface.
func removeNetwork(path string) error {
	return inNetns(path, func() error {
		link, err := podLink()
		if err != nil {
			return err
		}
		if err := netlink.QdiscDel(ingressOf(link.Attrs().Index)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return err
		}
		return nil
	})
}
