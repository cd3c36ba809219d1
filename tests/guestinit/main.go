// Command guestinit is the init of the integration tests' guests: it
// reports what the guest kernel sees as "GVMMTEST key=value" lines on
// the console, then does what the command line's gvmm.action asks.
//
//	gvmm.action=poweroff  power off (the default)
//	gvmm.action=reboot    reboot
//	gvmm.action=echo      echo console input lines back as "GVMMTEST echo=..." until EOF or "quit"
//	gvmm.action=hang      do nothing, forever
//	gvmm.modules=a,b      load /lib/modules/a.ko ... before reporting
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func report(key string, v any) { fmt.Printf("GVMMTEST %s=%v\n", key, v) }

func main() {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			report("error", fmt.Sprintf("mount %s: %v", m.dst, err))
		}
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	args := parseCmdline(string(cmdline))
	for _, m := range strings.Split(args["gvmm.modules"], ",") {
		if m != "" {
			loadModule("/lib/modules/" + m + ".ko")
		}
	}
	report("cmdline", strings.TrimSpace(string(cmdline)))
	report("nproc", runtime.NumCPU())
	report("online", readTrim("/sys/devices/system/cpu/online"))
	report("memtotal_kb", memTotal())
	report("ram_kb", systemRAM()/1024)
	report("date_unix", time.Now().Unix())
	report("rtc_unix", readTrim("/sys/class/rtc/rtc0/since_epoch"))
	report("files", listFiles("/etc/gvmmtest"))
	report("ready", 1)

	switch args["gvmm.action"] {
	case "reboot":
		shutdown(unix.LINUX_REBOOT_CMD_RESTART)
	case "echo":
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			if line == "quit" {
				break
			}
			report("echo", line)
		}
		shutdown(unix.LINUX_REBOOT_CMD_POWER_OFF)
	case "hang":
		select {}
	default:
		shutdown(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
}

func shutdown(cmd int) {
	unix.Sync()
	if err := unix.Reboot(cmd); err != nil {
		report("error", fmt.Sprintf("reboot(%#x): %v", cmd, err))
	}
	select {}
}

func parseCmdline(s string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "error:" + err.Error()
	}
	return strings.TrimSpace(string(b))
}

func memTotal() string {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return "error:" + err.Error()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			return strings.TrimSuffix(strings.TrimSpace(v), " kB")
		}
	}
	return "error:no MemTotal"
}

// systemRAM sums the "System RAM" ranges of /proc/iomem: the RAM the
// firmware's memory map gave the kernel.
func systemRAM() uint64 {
	data, err := os.ReadFile("/proc/iomem")
	if err != nil {
		return 0
	}
	var total uint64
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, " ") || !strings.HasSuffix(line, ": System RAM") {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(line, "%x-%x", &start, &end); err == nil {
			total += end - start + 1
		}
	}
	return total
}

func listFiles(dir string) string {
	var names []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, strings.TrimPrefix(p, dir+"/"))
		}
		return nil
	})
	return strings.Join(names, ",")
}

func loadModule(path string) {
	f, err := os.Open(path)
	if err != nil {
		report("error", err)
		return
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		report("error", fmt.Sprintf("loading %s: %v", path, err))
	}
}
