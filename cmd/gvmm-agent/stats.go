package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

// userHZ is /proc/stat's tick: USER_HZ is 100 on every Linux.
const userHZ = 100

// guestStats reads the guest's memory, CPU time and processes.
func guestStats() (*agent.Stats, error) {
	st := &agent.Stats{}
	mem, err := os.Open("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	sc := bufio.NewScanner(mem)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kib, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "MemTotal:":
			st.MemTotal = kib << 10
		case "MemAvailable:":
			st.MemAvailable = kib << 10
		}
	}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return nil, fmt.Errorf("/proc/stat: an unexpected first line %q", line)
	}
	// user nice system idle iowait irq softirq [steal]: busy is all but
	// idle and iowait.
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i > 7 {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/stat: %w", err)
		}
		st.CPUUsec += n * (1_000_000 / userHZ)
	}
	pids, err := guestPids()
	if err != nil {
		return nil, err
	}
	st.Processes = uint64(len(pids))
	return st, nil
}
