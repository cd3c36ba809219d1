// Package thp keeps transparent huge pages out of a VMM's own memory on
// hosts that give them to every mapping ("always", Debian's default), so
// that guest RAM, which asks for them with MADV_HUGEPAGE, is what gets
// them. Under "always" the Go runtime's first heap chunk and its arena
// index land in 2 MiB pages of which it uses a few KiB: several MiB of a
// VMM's own memory that no other VMM shares.
package thp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// envMark tells the re-executed process that THP is off because its
// first run turned it off, not because its parent wanted it off.
const envMark = "GVMM_THP_REEXEC"

const modeFile = "/sys/kernel/mm/transparent_hugepage/enabled"

// KeepOutOfRuntime is called first thing by a VMM's command. Where the
// host's mode is "always", its first call executes the program again
// (same PID, arguments and descriptors) with THP disabled from exec on
// (PR_SET_THP_DISABLE survives execve) and the runtime told to keep its
// heap out of THP (GODEBUG=disablethp=1), so the runtime starts in small
// pages. In that second run it marks every anonymous mapping so far
// MADV_NOHUGEPAGE, which keeps khugepaged from collapsing them later,
// and enables THP again for guest RAM. It returns nil without doing
// anything elsewhere; an error leaves the process as it was, only
// without the saving.
func KeepOutOfRuntime() error {
	mode, err := hostMode(modeFile)
	if err != nil || mode != "always" {
		return err
	}
	if os.Getenv(envMark) != "" {
		os.Unsetenv(envMark)
		err := adviseAnonymous("/proc/self/maps")
		if perr := unix.Prctl(unix.PR_SET_THP_DISABLE, 0, 0, 0, 0); perr != nil {
			return errors.Join(err, fmt.Errorf("thp: enabling huge pages again: %w", perr))
		}
		return err
	}
	disabled, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("thp: %w", err)
	}
	if disabled != 0 {
		return nil // the parent turned THP off: leave it so
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("thp: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("thp: disabling huge pages: %w", err)
	}
	err = unix.Exec(exe, os.Args, append(withGODEBUG(os.Environ(), "disablethp=1"), envMark+"=1"))
	_ = unix.Prctl(unix.PR_SET_THP_DISABLE, 0, 0, 0, 0)
	return fmt.Errorf("thp: executing %s again: %w", exe, err)
}

// hostMode returns the selected mode of the host's THP setting, the one
// in brackets ("always [madvise] never"), or "" for a kernel without THP.
func hostMode(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("thp: %w", err)
	}
	for _, f := range strings.Fields(string(b)) {
		if m, ok := strings.CutPrefix(f, "["); ok {
			return strings.TrimSuffix(m, "]"), nil
		}
	}
	return "", fmt.Errorf("thp: no selected mode in %s: %q", path, b)
}

// withGODEBUG adds setting to env's GODEBUG, keeping the settings there.
func withGODEBUG(env []string, setting string) []string {
	out := make([]string, 0, len(env)+1)
	found := false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			found = true
			if v != "" {
				setting = v + "," + setting
			}
			kv = "GODEBUG=" + setting
		}
		out = append(out, kv)
	}
	if !found {
		out = append(out, "GODEBUG="+setting)
	}
	return out
}

// adviseAnonymous marks every private writable mapping without a file
// (the heap's chunks, the BSS, stacks) MADV_NOHUGEPAGE.
func adviseAnonymous(maps string) error {
	f, err := os.Open(maps)
	if err != nil {
		return fmt.Errorf("thp: %w", err)
	}
	defer f.Close()
	ranges, err := anonymousRanges(f)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range ranges {
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, r[0], r[1]-r[0], unix.MADV_NOHUGEPAGE); e != 0 {
			errs = append(errs, fmt.Errorf("thp: madvise(%#x-%#x, MADV_NOHUGEPAGE): %w", r[0], r[1], e))
		}
	}
	return errors.Join(errs...)
}

// anonymousRanges returns the [start, end) of each private writable
// mapping with no file (inode 0) in a /proc/PID/maps listing.
func anonymousRanges(r io.Reader) ([][2]uintptr, error) {
	var out [][2]uintptr
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[4] != "0" || !strings.HasPrefix(f[1], "rw") || f[1][3] != 'p' {
			continue
		}
		start, end, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("thp: bad maps line %q", sc.Text())
		}
		s, err1 := strconv.ParseUint(start, 16, 64)
		e, err2 := strconv.ParseUint(end, 16, 64)
		if err := errors.Join(err1, err2); err != nil || e <= s {
			return nil, fmt.Errorf("thp: bad maps line %q: %w", sc.Text(), err)
		}
		out = append(out, [2]uintptr{uintptr(s), uintptr(e)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("thp: reading maps: %w", err)
	}
	return out, nil
}
