package vsockwire

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// Serve runs serve on each connection l accepts, each in its own
// goroutine, until Accept fails, and returns that error. The guests serve
// these services on vsock and, in the network tests, on TCP.
func Serve(l net.Listener, serve func(net.Conn)) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return fmt.Errorf("accept on %v: %w", l.Addr(), err)
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}

// Echo is PortEcho's service.
func Echo(c net.Conn) { _, _ = io.Copy(c, c) }

// Sink is PortSink's service.
func Sink(c net.Conn) {
	n, sum, err := Sum(c)
	if err != nil {
		fmt.Fprintf(c, "error %v\n", err)
		return
	}
	fmt.Fprintf(c, "%d %s\n", n, sum)
}

// Source is PortSource's service.
func Source(c net.Conn) {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	n, err := strconv.ParseUint(strings.TrimSpace(line), 10, 64)
	if err != nil {
		return
	}
	_ = WritePattern(c, n)
}
