// Command guestvsock is the init of the vsock tests' guests (tests/vsock).
// It loads the modules /etc/modules.order lists (the kernel's own vsock,
// vmw_vsock_virtio_transport_common and vmw_vsock_virtio_transport),
// reports "GVMMTEST cid=N" (the CID the driver read from the device),
// serves the vsockwire services on their ports and prints
// "GVMMTEST ready=1". Failures are reported as "GVMMTEST error=...".
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
)

func main() {
	guest.Setup()
	if err := guest.LoadModules(); err != nil {
		guest.Report("error", err)
	}
	cid, err := localCID()
	if err != nil {
		guest.Report("error", err)
	}
	guest.Report("cid", cid)
	for port, serve := range map[uint32]func(net.Conn){
		vsockwire.PortEcho:    vsockwire.Echo,
		vsockwire.PortSink:    vsockwire.Sink,
		vsockwire.PortSource:  vsockwire.Source,
		vsockwire.PortStall:   stall,
		vsockwire.PortControl: control,
	} {
		l, err := vsock.Listen(port, nil)
		if err != nil {
			guest.Report("error", fmt.Sprintf("listen on port %d: %v", port, err))
			continue
		}
		go func() { guest.Report("error", vsockwire.Serve(l, serve)) }()
	}
	guest.Report("ready", 1)
	select {}
}

// localCID waits for the driver to bind: the modules load asynchronously.
func localCID() (uint32, error) {
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var cid uint32
		if cid, err = vsock.ContextID(); err == nil && cid != vsockAny {
			return cid, nil
		}
	}
	return 0, fmt.Errorf("no vsock CID: %v", err)
}

// vsockAny is VMADDR_CID_ANY, what the core answers without a transport.
const vsockAny = 0xffffffff

// stall keeps the connection open and never reads it.
func stall(net.Conn) { select {} }

func control(c net.Conn) {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	var port uint32
	var n uint64
	if _, err := fmt.Sscanf(line, "dial %d %d\n", &port, &n); err != nil {
		fmt.Fprintf(c, "error bad command %q\n", line)
		return
	}
	answer, err := dial(port, n)
	if err != nil {
		fmt.Fprintf(c, "error %v\n", err)
		return
	}
	fmt.Fprintf(c, "ok %s\n", answer)
}

// dial connects to the host's port, sends n bytes of the pattern and
// returns what the host answered.
func dial(port uint32, n uint64) (string, error) {
	c, err := vsock.Dial(vsock.Host, port, nil)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := vsockwire.WritePattern(c, n); err != nil {
		return "", fmt.Errorf("writing: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return "", fmt.Errorf("shutdown: %w", err)
	}
	answer, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	return strings.TrimSpace(string(answer)), nil
}
