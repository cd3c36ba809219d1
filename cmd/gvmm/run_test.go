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
