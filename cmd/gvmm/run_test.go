package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"run"},
		{"run", "--kernel", "k", "--cpus", "0"},
		{"run", "--kernel", "k", "--memory", "12Q"},
		{"run", "--kernel", "k", "--on-reboot", "maybe"},
		{"run", "--kernel", "k", "--seccomp", "maybe"},
		{"run", "--kernel", "k", "--disk", "x,bogus"},
		{"run", "--kernel", "k", "--vsock", "socket=/v"},
		{"run", "--kernel", "k", "--vsock", "cid=2,socket=/v"},
		{"run", "--config", "vm.json", "--vsock", "cid=3"},
		{"run", "--kernel", "k", "extra"},
		{"run", "--config", "nope.json"},
		{"run", "--config", "vm.json", "--memory", "1G"},
		{"run", "--restore", "/snap", "--memory", "1G"},
		{"run", "--restore", "/snap", "--config", "vm.json"},
		{"run", "--restore", "/snap", "--clock", "later"},
		{"run", "--restore", "/snap", "--net", "tap=x,bogus"},
		{"run", "--kernel", "k", "--paused"},
		{"run", "--kernel", "k", "--clock", "realtime"},
		{"run", "--kernel", "k", "--snapshot-dir", "/srv/snapshots"},
	} {
		assert.Equal(t, exitUsage, execute(osEnv(), args), "%v", args)
	}
}

// --net is the one VM flag a restore takes: the TAPs of a clone.
func TestRestoreTakesNet(t *testing.T) {
	code := execute(osEnv(), []string{"run", "--restore", t.TempDir(), "--net", "tap=clone0"})
	assert.NotEqual(t, exitUsage, code, "--net with --restore is not a usage error")
	assert.NotZero(t, code, "an empty folder is no snapshot")
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
}
