package thp

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHostMode(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want string
		wantErr             bool
	}{
		{"always", "[always] madvise never\n", "always", false},
		{"madvise", "always [madvise] never\n", "madvise", false},
		{"never", "always madvise [never]\n", "never", false},
		{"no selection", "always madvise never\n", "", true},
		{"no THP in the kernel", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if tc.content != "" {
				require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			}
			got, err := hostMode(path)
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestWithGODEBUG(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"none yet", []string{"A=1"}, []string{"A=1", "GODEBUG=disablethp=1"}},
		{"empty", []string{"GODEBUG=", "A=1"}, []string{"GODEBUG=disablethp=1", "A=1"}},
		{"kept", []string{"GODEBUG=gctrace=1"}, []string{"GODEBUG=gctrace=1,disablethp=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, withGODEBUG(tc.env, "disablethp=1"))
		})
	}
}

func TestAnonymousRanges(t *testing.T) {
	const maps = `00400000-00c00000 r-xp 00000000 08:01 1234 /usr/bin/gvmm
01000000-01100000 rw-p 00c00000 08:01 1234 /usr/bin/gvmm
01100000-01300000 rw-p 00000000 00:00 0 
c000000000-c000400000 rw-p 00000000 00:00 0 
7f0000000000-7f0010000000 rw-s 00000000 00:01 77 /memfd:guest (deleted)
7f0020000000-7f0020001000 ---p 00000000 00:00 0 
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
7ffc00100000-7ffc00102000 r--p 00000000 00:00 0 [vvar]
`
	got, err := anonymousRanges(strings.NewReader(maps))
	require.NoError(t, err)
	assert.Equal(t, [][2]uintptr{
		{0x01100000, 0x01300000},
		{0xc000000000, 0xc000400000},
		{0x7ffc00000000, 0x7ffc00021000},
	}, got, "the BSS, the heap and the stack; not the binary, shared memory or reservations")

	for _, bad := range []string{
		"zz-01300000 rw-p 00000000 00:00 0\n",
		"01300000-01100000 rw-p 00000000 00:00 0\n",
		"0130000001100000 rw-p 00000000 00:00 0\n",
	} {
		_, err := anonymousRanges(strings.NewReader(bad))
		assert.Error(t, err, bad)
	}
}

// TestAdviseAnonymous marks this test's own memory: every anonymous
// mapping there was before shows the advice afterwards (VmFlags "nh").
func TestAdviseAnonymous(t *testing.T) {
	before, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	ranges, err := anonymousRanges(strings.NewReader(string(before)))
	require.NoError(t, err)
	require.NotEmpty(t, ranges)
	require.NoError(t, adviseAnonymous("/proc/self/maps"))

	smaps, err := os.ReadFile("/proc/self/smaps")
	require.NoError(t, err)
	type vma struct {
		start, end uint64
		noHuge     bool
	}
	var vmas []vma
	for _, line := range strings.Split(string(smaps), "\n") {
		if flags, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			vmas[len(vmas)-1].noHuge = slices.Contains(strings.Fields(flags), "nh")
			continue
		}
		var v vma
		if n, _ := fmt.Sscanf(line, "%x-%x ", &v.start, &v.end); n == 2 {
			vmas = append(vmas, v)
		}
	}
	for _, r := range ranges {
		for _, v := range vmas {
			if v.start < uint64(r[1]) && uint64(r[0]) < v.end {
				assert.True(t, v.noHuge, "%#x-%#x is marked MADV_NOHUGEPAGE", v.start, v.end)
			}
		}
	}
}
