package bench

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// vsockBytes is what BenchmarkVsock moves each way per run.
const vsockBytes = 64 << 20

// BenchmarkVsock moves vsockBytes host to guest (to the guest's sink)
// and guest to host (from its source), each on one stream, through
// gvmm's hybrid vsock (a unix socket, the device in gvmm) and QEMU's
// vhost-vsock (AF_VSOCK in the host, the data path in the host kernel),
// and reports MiB/s and where the CPU time went. Both ends check a
// SHA-256 of the data. The guest is tests/guestvsock for both.
func BenchmarkVsock(b *testing.B) {
	k, err := debkernel.Get()
	if err != nil {
		b.Fatal(err)
	}
	mods, err := k.Modules(vsockModules...)
	if err != nil {
		b.Fatal(err)
	}
	initrd := filepath.Join(b.TempDir(), "guest.cpio")
	if err := initramfs.WriteGuest(initrd, kvmhost.Asset("guestvsock"), mods); err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "gvmm-bench-") // short: unix socket paths are limited
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	g := guestSpec{kernel: k.Vmlinuz, initrd: initrd, cmdline: cmdline, vsockSocket: filepath.Join(dir, "v.sock")}
	want := vsockwire.PatternSum(vsockBytes) // outside the timed transfers
	s := samples{}
	for range rounds("GVMM_BENCH_VSOCK_ROUNDS", 2) {
		for _, v := range vmms {
			r := start(b, v, g)
			r.waitReport(b, "ready")
			dial := func(port uint32) (net.Conn, error) { return vsock.Dial(vsockCID, port, nil) }
			if v.name == gvmm.name {
				dial = func(port uint32) (net.Conn, error) { return unixVsock(g.vsockSocket, port) }
			}
			for _, t := range []struct {
				dir string
				fn  func() error
			}{
				{"host to guest", func() error { return toSink(dial, want) }},
				{"guest to host", func() error { return fromSource(dial, want) }},
			} {
				before, t0 := r.cpu(b), time.Now()
				if err := t.fn(); err != nil {
					b.Fatalf("%s: %s: %v", v.name, t.dir, err)
				}
				wall, cpu := time.Since(t0), r.cpu(b).Sub(before)
				s.add(t.dir, v.name, float64(vsockBytes)/(1<<20)/wall.Seconds())
				s.add(t.dir+", wall", v.name, wall.Seconds())
				s.add(t.dir+", VMM outside guest mode", v.name, cpu.Host().Seconds())
				s.add(t.dir+", guest mode", v.name, cpu.Guest.Seconds())
			}
			r.cancel()
			<-r.done
		}
	}
	// Where the time goes: the VMM process's CPU time outside guest
	// mode (QEMU's excludes its vhost kernel thread, which moves its
	// data) and in guest mode (the guest's vCPU), against the wall time.
	for _, dir := range []string{"host to guest", "guest to host"} {
		emit(b, s, dir, "MiB/s", nil)
		emit(b, s, dir+", wall", "s", nil)
		emit(b, s, dir+", VMM outside guest mode", "CPU s", nil)
		emit(b, s, dir+", guest mode", "CPU s", nil)
	}
}

// unixVsock connects to a guest port through gvmm's socket.
func unixVsock(path string, port uint32) (net.Conn, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, err
	}
	// The answer a byte at a time: the stream starts right after it.
	var line []byte
	for one := make([]byte, 1); len(line) < 32 && (len(line) == 0 || line[len(line)-1] != '\n'); {
		if _, err := c.Read(one); err != nil {
			c.Close()
			return nil, fmt.Errorf("CONNECT %d: %w", port, err)
		}
		line = append(line, one[0])
	}
	if !strings.HasPrefix(string(line), "OK ") {
		c.Close()
		return nil, fmt.Errorf("CONNECT %d: answer %q", port, line)
	}
	return c, nil
}

type closeWriter interface{ CloseWrite() error }

// toSink writes vsockBytes to the guest's sink and checks the sum it
// answers against sum, the pattern's.
func toSink(dial func(uint32) (net.Conn, error), sum string) error {
	c, err := dial(vsockwire.PortSink)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(vmTimeout))
	if err := vsockwire.WritePattern(c, vsockBytes); err != nil {
		return err
	}
	if err := c.(closeWriter).CloseWrite(); err != nil {
		return err
	}
	answer, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("%d %s\n", vsockBytes, sum); answer != want {
		return fmt.Errorf("the guest's sink answered %q, want %q", answer, want)
	}
	return nil
}

// fromSource reads vsockBytes from the guest's source and checks their
// sum against want.
func fromSource(dial func(uint32) (net.Conn, error), want string) error {
	c, err := dial(vsockwire.PortSource)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(vmTimeout))
	if _, err := fmt.Fprintf(c, "%d\n", vsockBytes); err != nil {
		return err
	}
	n, sum, err := vsockwire.Sum(c)
	if err != nil {
		return err
	}
	if n != vsockBytes || sum != want {
		return fmt.Errorf("the guest's source sent %d bytes, sum %s", n, sum)
	}
	return nil
}
