// Package guestlink brings up a test guest's virtio-net interface, for
// the guests of tests/net and tests/metrics.
package guestlink

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
)

// Up waits for the first Ethernet interface (the driver probes
// asynchronously after its module loads), gives it the address cidr and
// brings it up.
func Up(cidr string) (netlink.Link, error) {
	link, err := ethernet()
	if err != nil {
		return nil, err
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", cidr, err)
	}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("link up: %w", err)
	}
	return link, nil
}

func ethernet() (netlink.Link, error) {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			if l.Type() == "device" && l.Attrs().Flags&net.FlagLoopback == 0 && len(l.Attrs().HardwareAddr) == 6 {
				return l, nil
			}
		}
	}
	return nil, errors.New("no Ethernet interface appeared")
}
