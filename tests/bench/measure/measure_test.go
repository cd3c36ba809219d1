package measure

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		assert.Equal(t, tt.want, Median(tt.in), "%v", tt.in)
	}
}

const smaps = `00400000-00800000 r-xp 00000000 08:01 1234 /usr/bin/gvmm
Size:               4096 kB
Rss:                2048 kB
Pss:                 512 kB
7f0000000000-7f0010000000 rw-p 00000000 00:00 0
Size:             262144 kB
Rss:              100000 kB
Pss:              100000 kB
AnonHugePages:     98304 kB
7f0010000000-7f0010100000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                 512 kB
Pss:                 500 kB
AnonHugePages:         0 kB
7f0020000000-7f0030000000 rw-p 00000000 00:00 0 [anon:guest-ram]
Size:             262144 kB
Rss:                  16 kB
7f0030000000-7f0040000000 rw-s 00000000 00:05 99 /memfd:ram (deleted)
Size:             262144 kB
Rss:                   8 kB
`

func TestReadSmaps(t *testing.T) {
	m, err := ReadSmaps(strings.NewReader(smaps), 256<<20)
	require.NoError(t, err)
	assert.Equal(t, uint64(2048+100000+512+16+8)<<10, m.RSS)
	assert.Equal(t, uint64(100000+16)<<10, m.GuestRSS)
	assert.Equal(t, uint64(2048+512+8)<<10, m.Own())
	assert.Equal(t, uint64(2048+8)<<10, m.FileRSS)
	assert.Equal(t, uint64(512+100000+500)<<10, m.PSS)
	assert.Equal(t, uint64(100000)<<10, m.GuestPSS)
	assert.Equal(t, uint64(512)<<10, m.FilePSS)
	assert.Equal(t, uint64(512+500)<<10, m.OwnPSS())
	assert.Equal(t, uint64(98304)<<10, m.Huge)
	assert.Equal(t, uint64(98304)<<10, m.GuestHuge)
	assert.Zero(t, m.OwnHuge())
}

func TestReadSmapsRejectsGarbage(t *testing.T) {
	for _, in := range []string{"", "zzz-1 rw-p 0 00:00 0\n", "1000-2000 rw-p\n", "1000-2000 rw-p 0 00:00 0\nRss: x kB\n", "1000-2000 rw-p 0 00:00 0\nPss:\n"} {
		_, err := ReadSmaps(strings.NewReader(in), 1)
		assert.Error(t, err, "%q", in)
	}
}

const hist = `# event histogram
#
# trigger info: hist:keys=port,rw:vals=hitcount:sort=hitcount:size=4096 [active]
#

{ port:         96, rw:          0 } hitcount:          3
{ port:       1016, rw:          1 } hitcount:       4242

Totals:
    Hits: 4245
    Entries: 2
    Dropped: 0
`

func TestParseHist(t *testing.T) {
	c, err := ParseHist(strings.NewReader(hist), []string{"port", "rw"})
	require.NoError(t, err)
	assert.Equal(t, Counts{"96,0": 3, "1016,1": 4242}, c)
	assert.Equal(t, uint64(4245), c.Total())

	_, err = ParseHist(strings.NewReader(hist), []string{"ecx", "write"})
	assert.ErrorContains(t, err, "want keys")
	_, err = ParseHist(strings.NewReader("{ port: 1 } hits: 2\n"), []string{"port"})
	assert.ErrorContains(t, err, "no hitcount")
}

func TestExitName(t *testing.T) {
	for _, tt := range []struct {
		svm  bool
		code uint64
		want string
	}{
		{true, 0x7b, "IOIO"},
		{true, 0x4e, "EXCP_PF"},
		{true, 0x400, "NPF"},
		{true, 0x13, "WRITE_CR3"},
		{true, 0x93, "CR3_WRITE_TRAP"},
		{true, 0x3ff, "SVM_0x3ff"},
		{false, 30, "IO_INSTRUCTION"},
		{false, 99, "VMX_99"},
	} {
		assert.Equal(t, tt.want, ExitName(tt.svm, tt.code))
	}
}

func TestParseStat(t *testing.T) {
	// Fields 14, 15 and 43 are 250, 40 and 200; the name has a space.
	fields := make([]string, 52)
	for i := range fields {
		fields[i] = "0"
	}
	fields[14-1], fields[15-1], fields[43-1] = "250", "40", "200"
	line := "1234 (gvmm run) " + strings.Join(fields[2:], " ")
	c, err := ParseStat(line)
	require.NoError(t, err)
	assert.Equal(t, CPU{User: 2500 * time.Millisecond, System: 400 * time.Millisecond, Guest: 2 * time.Second}, c)
	assert.Equal(t, 900*time.Millisecond, c.Host())
	assert.Equal(t, CPU{User: time.Second}, c.Sub(CPU{User: 1500 * time.Millisecond, System: 400 * time.Millisecond, Guest: 2 * time.Second}))

	for _, bad := range []string{"", "1 (x) 1 2 3", strings.Replace(line, " 250 ", " x ", 1)} {
		_, err := ParseStat(bad)
		assert.Error(t, err, "%q", bad)
	}
}
