// Package guest is what the integration tests' guest inits share: the
// pseudo file systems, the kernel command line, module loading and the
// "GVMMTEST key=value" report lines the tests parse.
package guest

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Report prints one result line for the test on the host.
func Report(key string, v any) { fmt.Printf(reportPrefix+"%s=%v\n", key, v) }

// Setup mounts proc, sysfs and devtmpfs, reporting failures, and returns
// the kernel command line as key=value pairs.
func Setup() map[string]string {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			Report("error", fmt.Sprintf("mount %s: %v", m.dst, err))
		}
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		Report("error", err)
	}
	args := map[string]string{}
	for _, f := range strings.Fields(string(cmdline)) {
		k, v, _ := strings.Cut(f, "=")
		args[k] = v
	}
	return args
}

// LoadModule loads a kernel module file; one already loaded is fine.
func LoadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("loading %s: %w", path, err)
	}
	return nil
}

// ModulesOrder lists the modules of an initramfs.WriteGuest image, one
// name a line, dependencies first; each is /lib/modules/NAME.ko.
const ModulesOrder = "/etc/modules.order"

// LoadModules loads the modules ModulesOrder lists, in order.
func LoadModules() error {
	data, err := os.ReadFile(ModulesOrder)
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(data)) {
		if err := LoadModule("/lib/modules/" + name + ".ko"); err != nil {
			return err
		}
	}
	return nil
}
