package main

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

// linkWait bounds the wait for the guest's interface: the virtio-net
// driver probes asynchronously after its module loads.
const linkWait = 20 * time.Second

// setupNetwork gives the interface with n's MAC the pod's MTU,
// addresses and routes, and brings it and the loopback up.
func setupNetwork(n *agent.Network) error {
	mac, err := net.ParseMAC(n.MAC)
	if err != nil {
		return fmt.Errorf("network: MAC %q: %w", n.MAC, err)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("network: lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("network: lo up: %w", err)
	}
	link, err := linkByMAC(mac)
	if err != nil {
		return err
	}
	if n.MTU > 0 {
		if err := netlink.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("network: MTU %d: %w", n.MTU, err)
		}
	}
	for _, a := range n.Addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("network: address %q: %w", a, err)
		}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("network: address %s: %w", a, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("network: link up: %w", err)
	}
	for _, r := range n.Routes {
		route := &netlink.Route{LinkIndex: link.Attrs().Index}
		if r.Dst != "" {
			if _, route.Dst, err = net.ParseCIDR(r.Dst); err != nil {
				return fmt.Errorf("network: route to %q: %w", r.Dst, err)
			}
		}
		if r.Gw != "" {
			if route.Gw = net.ParseIP(r.Gw); route.Gw == nil {
				return fmt.Errorf("network: gateway %q is no address", r.Gw)
			}
		} else {
			route.Scope = netlink.SCOPE_LINK
		}
		// The addresses made their subnets' routes already.
		if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("network: route %+v: %w", r, err)
		}
	}
	return nil
}

// linkByMAC waits for the interface with address mac.
func linkByMAC(mac net.HardwareAddr) (netlink.Link, error) {
	for deadline := time.Now().Add(linkWait); ; time.Sleep(50 * time.Millisecond) {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == mac.String() {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("network: no interface with MAC %s appeared within %s", mac, linkWait)
		}
	}
}
