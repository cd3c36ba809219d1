package bench

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// netModules are what BenchmarkNet's guest loads: the PCI transport
// (gvmm's device and QEMU's virtio-net-pci) and the kernel's virtio_net.
var netModules = []string{"virtio_pci", "virtio_net"}

// The TAP all VMMs use in turn, the host's address on it and the
// guest's, and one MAC for every guest so that the host's neighbour
// entry stays right between runs.
const (
	benchTap     = "gvbench0"
	benchHostIP  = "10.0.4.1"
	benchGuestIP = "10.0.4.2"
	benchMAC     = "52:54:00:12:34:56"
)

// qemuVhost is QEMU with the same virtio-net-pci device on the host
// kernel's vhost-net, for reference: a data path in the kernel, not the
// userspace one gvmm and plain QEMU have.
var qemuVhost = vmm{"QEMU vhost=on", func(g guestSpec) []string {
	g.tapVhost = true
	return qemu.argv(g)
}}

// BenchmarkNet moves vsockBytes over TCP host to guest (to the guest's
// sink) and guest to host (from its source), each on one connection,
// through the same TAP: gvmm's virtio-net, QEMU's virtio-net-pci with
// its userspace backend (vhost=off, the same kind of data path) and, for
// reference, with vhost-net (vhost=on). Both ends check a SHA-256 of
// the data. The guest is tests/guestnet for all.
func BenchmarkNet(b *testing.B) {
	k, err := debkernel.Get()
	if err != nil {
		b.Fatal(err)
	}
	mods, err := k.Modules(netModules...)
	if err != nil {
		b.Fatal(err)
	}
	initrd := filepath.Join(b.TempDir(), "guest.cpio")
	if err := initramfs.WriteGuest(initrd, kvmhost.Asset("guestnet"), mods); err != nil {
		b.Fatal(err)
	}
	makeBenchTap(b)
	g := guestSpec{kernel: k.Vmlinuz, initrd: initrd, tap: benchTap,
		cmdline: fmt.Sprintf("%s gvmm.ip=%s/24 gvmm.host=%s", cmdline, benchGuestIP, benchHostIP)}
	want := vsockwire.PatternSum(vsockBytes) // outside the timed transfers
	dial := func(port uint32) (net.Conn, error) {
		return net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", benchGuestIP, port), time.Minute)
	}
	s := samples{}
	for range rounds("GVMM_BENCH_NET_ROUNDS", 2) {
		for _, v := range []vmm{gvmm, qemu, qemuVhost} {
			r := start(b, v, g)
			r.waitReport(b, "ready")
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
				rate := float64(vsockBytes) / (1 << 20) / wall.Seconds()
				name, metric := v.name, t.dir
				if v.name == qemuVhost.name {
					// Its own rows, with gvmm's figures as their gvmm column.
					name, metric = qemu.name, t.dir+" vs vhost=on"
				} else if v.name == gvmm.name {
					s.add(t.dir+" vs vhost=on", gvmm.name, rate)
				}
				s.add(metric, name, rate)
				if v.name != qemuVhost.name {
					s.add(t.dir+", VMM outside guest mode", v.name, cpu.Host().Seconds())
					s.add(t.dir+", guest mode", v.name, cpu.Guest.Seconds())
				}
			}
			r.cancel()
			<-r.done
		}
	}
	for _, dir := range []string{"host to guest", "guest to host"} {
		emit(b, s, dir, "MiB/s", &atLeast1)
		emit(b, s, dir+" vs vhost=on", "MiB/s", nil)
		emit(b, s, dir+", VMM outside guest mode", "CPU s", nil)
		emit(b, s, dir+", guest mode", "CPU s", nil)
	}
}

// makeBenchTap makes the persistent TAP every VMM attaches to in turn,
// with the host's address.
func makeBenchTap(b *testing.B) {
	b.Helper()
	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: benchTap},
		Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE}
	if err := netlink.LinkAdd(tap); err != nil {
		b.Fatalf("TAP %s: %v", benchTap, err)
	}
	for _, f := range tap.Fds {
		f.Close()
	}
	b.Cleanup(func() { _ = netlink.LinkDel(tap) })
	addr, err := netlink.ParseAddr(benchHostIP + "/24")
	if err != nil {
		b.Fatal(err)
	}
	if err := netlink.AddrAdd(tap, addr); err != nil {
		b.Fatal(err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		b.Fatal(err)
	}
}
