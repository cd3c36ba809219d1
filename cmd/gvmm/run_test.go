package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/machine"
)

func TestParseDisk(t *testing.T) {
	tests := []struct {
		in   string
		want machine.Disk
		ok   bool
	}{
		{"a.img", machine.Disk{Path: "a.img"}, true},
		{"a.img,readonly", machine.Disk{Path: "a.img", ReadOnly: true}, true},
		{"a.img,serial=web1,readonly", machine.Disk{Path: "a.img", ReadOnly: true, Serial: "web1"}, true},
		{"", machine.Disk{}, false},
		{"a.img,rw", machine.Disk{}, false},
		{"a.img,readonly=yes", machine.Disk{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, err := parseDisk(tt.in)
			if !tt.ok {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, d)
		})
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"run"},
		{"run", "--kernel", "k", "--cpus", "0"},
		{"run", "--kernel", "k", "--memory", "12Q"},
		{"run", "--kernel", "k", "--on-reboot", "maybe"},
		{"run", "--kernel", "k", "--disk", "x,bogus"},
		{"run", "--kernel", "k", "extra"},
	} {
		assert.Equal(t, exitUsage, dispatch(args), "%v", args)
	}
}

func TestBalloonFlag(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--balloon"}, []string{"--balloon=size=0"}},
		{[]string{"--balloon", "size=384M", "--cpus", "1"}, []string{"--balloon=size=384M", "--cpus", "1"}},
		{[]string{"--balloon", "--cpus", "1"}, []string{"--balloon=size=0", "--cpus", "1"}},
		{[]string{"--balloon=size=1G"}, []string{"--balloon=size=1G"}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, joinBalloonArgs(tt.args))
	}
	b, err := parseBalloon("size=384M")
	require.NoError(t, err)
	assert.Equal(t, uint64(384<<20), b.Size)
	b, err = parseBalloon("size=0")
	require.NoError(t, err)
	assert.Zero(t, b.Size)
	for _, bad := range []string{"384M", "size=", "size=-1", "size=12Q"} {
		_, err := parseBalloon(bad)
		assert.Error(t, err, bad)
	}
}
