// Command guestinit is the init of the integration tests' guests: it
// reports what the guest kernel sees as "GVMMTEST key=value" lines on
// the console, then does what the command line's gvmm.action asks.
//
//	gvmm.action=poweroff  power off (the default)
//	gvmm.action=reboot    reboot
//	gvmm.action=shell     run /bin/sh on the console, report its exit status, power off
//	gvmm.action=hang      do nothing, forever
package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
)

func main() {
	args := guest.Setup()
	guest.Report("cmdline", readTrim("/proc/cmdline"))
	guest.Report("nproc", runtime.NumCPU())
	guest.Report("online", readTrim("/sys/devices/system/cpu/online"))
	guest.Report("memtotal_kb", memTotal())
	guest.Report("ram_kb", systemRAM()/1024)
	guest.Report("date_unix", time.Now().Unix())
	guest.Report("rtc_unix", readTrim("/sys/class/rtc/rtc0/since_epoch"))
	guest.Report("files", listFiles("/etc/gvmmtest"))
	guest.Report("uarts", uarts())
	guest.Report("clocksources", readTrim("/sys/devices/system/clocksource/clocksource0/available_clocksource"))
	guest.Report("ready", 1)

	switch args["gvmm.action"] {
	case "reboot":
		shutdown(unix.LINUX_REBOOT_CMD_RESTART)
	case "shell":
		sh := exec.Command("/bin/sh")
		sh.Stdin, sh.Stdout, sh.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := sh.Run(); sh.ProcessState == nil {
			guest.Report("error", fmt.Sprintf("/bin/sh: %v", err))
		} else {
			guest.Report("shell_exit", sh.ProcessState.ExitCode())
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
		guest.Report("error", fmt.Sprintf("reboot(%#x): %v", cmd, err))
	}
	select {}
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

// uarts lists the 8250 driver's ports as "line:type", in line order:
// a port no UART answers at is "unknown".
func uarts() string {
	data, err := os.ReadFile("/proc/tty/driver/serial")
	if err != nil {
		return "error:" + err.Error()
	}
	var ports []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasSuffix(f[0], ":") || !strings.HasPrefix(f[1], "uart:") {
			continue
		}
		ports = append(ports, strings.TrimSuffix(f[0], ":")+":"+strings.TrimPrefix(f[1], "uart:"))
	}
	return strings.Join(ports, ",")
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
