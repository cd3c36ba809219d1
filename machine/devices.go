package machine

import (
	"context"
	"fmt"
	"time"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/devices/boottimer"
	"github.com/gvmm-dev/gvmm/devices/cmos"
	"github.com/gvmm-dev/gvmm/devices/pci"
	"github.com/gvmm-dev/gvmm/devices/pm"
	"github.com/gvmm-dev/gvmm/devices/ps2"
	"github.com/gvmm-dev/gvmm/devices/uart"
	"github.com/gvmm-dev/gvmm/internal/metrics"
	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/machine/acpi"
	"github.com/gvmm-dev/gvmm/machine/acpi/aml"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
)

// Legacy PC port assignments.
const (
	com1Port = 0x3f8
	com1IRQ  = 4
	kbdIRQ   = 1
	postPort = 0x80 // POST diagnostics: Linux writes it as an I/O delay
	sciIRQ   = 9
	// i8042ResetCmd on port 0x64 pulses the CPU reset line.
	i8042ResetCmd = 0xfe
)

// irqLine raises an ISA interrupt on KVM's in-kernel PIC and IOAPIC. The
// ISA lines our devices use are edge-triggered, so a trigger is a pulse.
type irqLine struct {
	vm  *kvm.VM
	irq uint32
}

func (l irqLine) Trigger() error {
	if err := l.vm.SetIRQLine(l.irq, true); err != nil {
		return err
	}
	return l.vm.SetIRQLine(l.irq, false)
}

var _ devices.Interrupt = irqLine{}

// ignored is a port that reads as zero and drops writes, for ports a
// guest uses as delays.
type ignored struct{}

func (ignored) Read(_ uint64, data []byte) { clear(data) }
func (ignored) Write(uint64, []byte)       {}

func (b *bootedVM) setupDevices(ctx context.Context, mem *memory.Memory) error {
	log := b.m.log
	b.pio = devices.NewBus("pio", b.m.cfg.CPUs, log)
	b.mmio = devices.NewBus("mmio", b.m.cfg.CPUs, log)
	com1 := uart.New(irqLine{b.vm, com1IRQ}, b.m.console, log)
	b.power = pm.New(irqLine{b.vm, sciIRQ}, func() { b.end(ExitPowerOff, nil) }, log)
	kbd := ps2.New(irqLine{b.vm, kbdIRQ}, func() { b.end(ExitReboot, nil) }, log)
	rtc := cmos.New(time.Now)
	b.saved = savedDevices{uart: com1, kbd: kbd, rtc: rtc}
	for _, d := range []struct {
		name       string
		base, size uint64
		dev        devices.Device
	}{
		{"uart", com1Port, uart.Size, com1},
		{"i8042", uint64(ps2.DefaultBase), ps2.Size, kbd},
		{"rtc", uint64(cmos.DefaultBase), cmos.Size, rtc},
		{"post", postPort, 1, ignored{}},
		{"acpi_pm", uint64(pm.DefaultBase), pm.Size, b.power},
		{"boot_timer", boottimer.Port, boottimer.Size, boottimer.New(func() {
			log.Info("boot timer: guest user space reached", "since_boot", time.Since(b.begun).Round(time.Microsecond))
		})},
	} {
		if err := b.pio.Insert(d.name, d.base, d.size, d.dev); err != nil {
			return fmt.Errorf("machine: %w", err)
		}
	}
	if err := b.setupPCI(mem); err != nil {
		return err
	}
	if b.m.input != nil {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.m.feedConsole(ctx, com1)
		}()
	}
	return nil
}

// setupPCI puts the root complex on the buses and the disks on it.
func (b *bootedVM) setupPCI(mem *memory.Memory) error {
	root, err := pci.NewRoot(pci.RootConfig{Windows: pciWindows, Log: b.m.log, BARMapped: b.notifiers.barMapped})
	if err != nil {
		return fmt.Errorf("machine: %w", err)
	}
	b.saved.root = root
	if err := b.pio.Insert("pci_config", pci.ConfigAddressPort, pci.PortIOSize, root.PortIO()); err != nil {
		return fmt.Errorf("machine: %w", err)
	}
	if err := b.mmio.Insert("pci_ecam", ECAMBase, ECAMSize, root.ECAM()); err != nil {
		return fmt.Errorf("machine: %w", err)
	}
	for _, w := range root.MMIOWindows() {
		if err := b.mmio.Insert("pci_bars", w.Base, w.Size, w.Device); err != nil {
			return fmt.Errorf("machine: %w", err)
		}
	}
	for _, disk := range b.m.disks {
		disk.Reset() // a reboot finds the disk as at power-on
		if err := b.addVirtio(root, mem, disk); err != nil {
			return err
		}
	}
	if bal := b.m.balloon; bal != nil {
		bal.Reset()
		if err := b.addVirtio(root, mem, bal); err != nil {
			return err
		}
	}
	for _, s := range b.m.shares {
		s.Reset() // a reboot starts a new 9P session
		if err := b.addVirtio(root, mem, s); err != nil {
			return err
		}
	}
	if v := b.m.vsock; v != nil {
		v.dev.Reset()
		if err := b.addVirtio(root, mem, v.dev); err != nil {
			return err
		}
	}
	for _, n := range b.m.nets {
		n.dev.Reset() // a reboot starts without offloads
		if err := b.addVirtio(root, mem, n.dev); err != nil {
			return err
		}
	}
	return nil
}

func (b *bootedVM) addVirtio(root *pci.Root, mem *memory.Memory, dev virtio.Device) error {
	vectors, err := b.newMSIVectors(len(dev.QueueMaxSizes()) + 1)
	if err != nil {
		return err
	}
	fn, err := virtio.NewPCI(dev, virtio.PCIOptions{Mem: mem, MSI: vectors, Log: b.m.log})
	if err != nil {
		return fmt.Errorf("machine: %w", err)
	}
	b.closers = append(b.closers, fn.Close)
	// Its queue workers wait in read(2), as vCPUs wait in KVM_RUN.
	reserveProcs(fn.NumQueues())
	b.closers = append(b.closers, func() error { releaseProcs(fn.NumQueues()); return nil })
	if _, err := root.Add(fn); err != nil {
		return fmt.Errorf("machine: %w", err)
	}
	b.virtio = append(b.virtio, fn)
	if src, ok := dev.(metrics.Source); ok {
		n := 0
		for _, s := range b.sources {
			if s.typ == dev.Type() {
				n++
			}
		}
		b.sources = append(b.sources, namedSource{name: fmt.Sprintf("%s%d", dev.Type(), n), typ: dev.Type(), src: src})
	}
	return nil
}

// writeACPI places the ACPI tables in the reserved BIOS area.
func writeACPI(mem *memory.Memory, cpus int) (memory.GuestAddress, error) {
	tables, rsdp, err := acpi.Build(acpi.Config{
		CPUs:       cpus,
		LAPICAddr:  LAPICAddr,
		IOAPICAddr: IOAPICAddr,
		PM:         acpi.PMConfig{Port: pm.DefaultBase, SCI: sciIRQ},
		Reset:      &acpi.ResetRegister{Port: ps2.DefaultBase + 4, Value: i8042ResetCmd},
		Serial:     []acpi.SerialPort{{Port: com1Port, IRQ: com1IRQ}},
		MCFG:       &acpi.MCFGConfig{Base: ECAMBase, StartBus: 0, EndBus: 0},
		Devices:    []aml.Term{pciRootBridge()},
	}, acpi.RegionBase, acpi.RegionSize)
	if err != nil {
		return 0, fmt.Errorf("machine: %w", err)
	}
	if err := mem.WriteAt(tables, acpi.RegionBase); err != nil {
		return 0, fmt.Errorf("machine: writing ACPI tables: %w", err)
	}
	return rsdp, nil
}
