package machine_test

import (
	"context"
	"fmt"
	"os"

	"github.com/gvmm-dev/gvmm/machine"
)

// Boot a kernel with an initramfs on two vCPUs, its console on stdout,
// and wait for the guest to power off.
func Example() {
	m, err := machine.New(machine.Config{
		Kernel:  "/boot/vmlinuz",
		Initrd:  "/boot/initrd.img",
		CPUs:    2,
		Memory:  1 << 30,
		Console: os.Stdout,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	if err := m.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	if err := m.Wait(); err != nil {
		fmt.Fprintln(os.Stderr, "guest fault:", err)
		return
	}
	fmt.Println("guest", m.ExitReason())
}
