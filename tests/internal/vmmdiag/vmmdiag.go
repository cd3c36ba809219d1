// Package vmmdiag describes what a VMM process is doing when a test finds
// its guest stalled: whether its threads spin (a vCPU looping in the
// kernel's KVM_RUN, or in the VMM) or sleep (a guest halted and never
// woken, or a VMM thread blocked), and how KVM's counters moved
// meanwhile. Without it, a stall that happens once in ten runs leaves
// nothing but a quiet console.
package vmmdiag

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// debugfsKVM holds KVM's counters, summed over all VMs.
const debugfsKVM = "/sys/kernel/debug/kvm"

// kvmCounters are the counters worth a line when a guest stalls.
var kvmCounters = []string{"exits", "halt_exits", "halt_wakeup", "irq_exits", "irq_injections",
	"io_exits", "mmio_exits", "pf_taken", "pf_fixed", "tlb_flush", "signal_exits"}

// thread is one task's state and CPU time in clock ticks.
type thread struct {
	state string
	ticks uint64
}

// Snapshot samples process pid's threads and KVM's counters twice, over
// d, and describes the difference. It mounts debugfs where it is not
// mounted (the KVM test host runs tests as root).
func Snapshot(pid int, d time.Duration) string {
	if _, err := os.Stat(debugfsKVM); err != nil {
		_ = unix.Mount("debugfs", "/sys/kernel/debug", "debugfs", 0, "")
	}
	t0, k0 := threads(pid), counters()
	time.Sleep(d)
	t1, k1 := threads(pid), counters()
	var b strings.Builder
	fmt.Fprintf(&b, "VMM pid %d over %s: threads (tid state cpu-ticks):", pid, d)
	tids := make([]int, 0, len(t1))
	for tid := range t1 {
		tids = append(tids, tid)
	}
	slices.Sort(tids)
	for _, tid := range tids {
		fmt.Fprintf(&b, " %d %s %d", tid, t1[tid].state, t1[tid].ticks-t0[tid].ticks)
	}
	if len(tids) == 0 {
		b.WriteString(" none (the process is gone)")
	}
	b.WriteString("\nKVM counters moved:")
	if len(k1) == 0 {
		b.WriteString(" unknown (no " + debugfsKVM + ")")
	}
	for _, name := range kvmCounters {
		if v1, ok := k1[name]; ok {
			fmt.Fprintf(&b, " %s +%d", name, v1-k0[name])
		}
	}
	return b.String()
}

// threads reads every task of pid from /proc.
func threads(pid int) map[int]thread {
	out := map[int]thread{}
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, path := range stats {
		tid, err := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if err != nil {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// The fields after the command, which may hold spaces, in its
		// parentheses: state is field 3, utime and stime 14 and 15.
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseUint(f[11], 10, 64)
		stime, _ := strconv.ParseUint(f[12], 10, 64)
		out[tid] = thread{state: f[0], ticks: utime + stime}
	}
	return out
}

// counters reads KVM's debugfs counters.
func counters() map[string]uint64 {
	out := map[string]uint64{}
	for _, name := range kvmCounters {
		data, err := os.ReadFile(filepath.Join(debugfsKVM, name))
		if err != nil {
			continue
		}
		if v, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// KernelLog returns the kernel log's last n lines as the kernel keeps
// them (each with its level and timestamp), or why it cannot be read.
func KernelLog(n int) string {
	size, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil {
		return fmt.Sprintf("(kernel log unreadable: %v)", err)
	}
	buf := make([]byte, size)
	m, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return fmt.Sprintf("(kernel log unreadable: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(buf[:m]), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
