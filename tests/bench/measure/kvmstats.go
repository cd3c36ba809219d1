package measure

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// KVMStatsDir is where the host kernel sums every VM's KVM statistics
// (exits by kind, halt polling, interrupt injections), one file each,
// with debugfs mounted.
const KVMStatsDir = "/sys/kernel/debug/kvm"

// ReadKVMStats reads the single-number statistics in dir (KVMStatsDir):
// what the kernel sums over every VM and vCPU, so with one VM running its
// own. Histograms and the per-VM folders are left out.
func ReadKVMStats(dir string) (Counts, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("measure: KVM statistics: %w", err)
	}
	c := Counts{}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("measure: KVM statistics: %w", err)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			continue // a histogram, several numbers
		}
		c[e.Name()] = n
	}
	if len(c) == 0 {
		return nil, fmt.Errorf("measure: no KVM statistics in %s (debugfs mounted, kvm loaded?)", dir)
	}
	return c, nil
}

// Sub is c minus an earlier reading of the same counters.
func (c Counts) Sub(before Counts) Counts {
	d := Counts{}
	for k, v := range c {
		d[k] = v - before[k]
	}
	return d
}
