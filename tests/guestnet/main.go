// Command guestnet is the init of the network tests' guests (tests/net).
// It loads the modules /etc/modules.order lists (virtio_net and its
// dependencies), gives the first Ethernet interface the address
// gvmm.ip (CIDR), pings gvmm.host, and serves on TCP the services the
// vsock guest serves on vsock, on the same ports (tests/internal/vsockwire:
// a sink answering "N SUM", a source sending the N bytes asked for). With gvmm.dial=IP:PORT it then sends gvmm.dialbytes bytes
// of the pattern to that sink, as a second guest on the same bridge
// does to the first.
//
// Reports, in order:
//
//	mac=MAC          the interface's address, as the driver read it
//	ping=ok          an ICMP echo answered by gvmm.host
//	ready=1          the services listen
//	dialed=N SUM     what the other guest's sink answered
//
// Failures are reported as "GVMMTEST error=...".
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/guestlink"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
)

func main() {
	args := guest.Setup()
	if err := guest.LoadModules(); err != nil {
		guest.Report("error", err)
	}
	if err := run(args); err != nil {
		guest.Report("error", err)
	}
	select {}
}

func run(args map[string]string) error {
	link, err := guestlink.Up(args["gvmm.ip"])
	if err != nil {
		return err
	}
	guest.Report("mac", link.Attrs().HardwareAddr)
	if err := ping(args["gvmm.host"]); err != nil {
		return err
	}
	guest.Report("ping", "ok")
	for port, serve := range map[int]func(net.Conn){vsockwire.PortSink: vsockwire.Sink, vsockwire.PortSource: vsockwire.Source} {
		l, err := net.Listen("tcp4", fmt.Sprintf(":%d", port))
		if err != nil {
			return err
		}
		go func() { guest.Report("error", vsockwire.Serve(l, serve)) }()
	}
	guest.Report("ready", 1)
	if to := args["gvmm.dial"]; to != "" {
		n, err := strconv.ParseUint(args["gvmm.dialbytes"], 10, 64)
		if err != nil {
			return fmt.Errorf("gvmm.dialbytes: %w", err)
		}
		answer, err := dial(to, n)
		if err != nil {
			return fmt.Errorf("dial %s: %w", to, err)
		}
		guest.Report("dialed", answer)
	}
	return nil
}

// ping sends ICMP echoes to host until one is answered.
func ping(host string) error {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("icmp socket: %w", err)
	}
	defer c.Close()
	dst, err := net.ResolveIPAddr("ip4", host)
	if err != nil {
		return err
	}
	var lastErr error
	for seq := 1; seq <= 30; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: seq, Data: []byte("gvmm")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, dst); err != nil {
			lastErr = err
			time.Sleep(time.Second)
			continue
		}
		if err := c.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				lastErr = err
				break
			}
			reply, err := icmp.ParseMessage(1, buf[:n])
			if err == nil && reply.Type == ipv4.ICMPTypeEchoReply && from.String() == dst.String() {
				return nil
			}
		}
	}
	return fmt.Errorf("no echo reply from %s: %v", host, lastErr)
}

// dial sends n bytes of the pattern to the sink at addr and returns its
// answer.
func dial(addr string, n uint64) (string, error) {
	c, err := net.DialTimeout("tcp4", addr, 30*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := vsockwire.WritePattern(c, n); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	answer, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(answer), err
}
