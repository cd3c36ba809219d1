// Command guestinit is the init of the integration tests' guests: it
// reports what the guest kernel sees as "GVMMTEST key=value" lines on
// the console, then does what the command line's gvmm.action asks.
//
//	gvmm.action=poweroff  power off (the default)
//	gvmm.action=reboot    reboot
//	gvmm.action=echo      echo console input lines back as "GVMMTEST echo=..." until EOF or "quit"
//	gvmm.action=hang      do nothing, forever
package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
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
	guest.Report("ready", 1)

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
			guest.Report("echo", line)
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
