package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

func TestMountOptions(t *testing.T) {
	for _, tc := range []struct {
		opts  []string
		flags uintptr
		data  string
	}{
		{nil, 0, ""},
		{[]string{"nosuid", "noexec", "nodev"}, unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, ""},
		{[]string{"nosuid", "strictatime", "mode=755", "size=65536k"}, unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=755,size=65536k"},
		{[]string{"rw", "rbind", "ro"}, unix.MS_RDONLY, ""},
		{[]string{"newinstance", "ptmxmode=0666", "gid=5"}, 0, "newinstance,ptmxmode=0666,gid=5"},
	} {
		flags, data := mountOptions(tc.opts)
		assert.Equal(t, tc.flags, flags, "%v", tc.opts)
		assert.Equal(t, tc.data, data, "%v", tc.opts)
	}
}

func TestGuestStatsOfThisMachine(t *testing.T) {
	st, err := guestStats()
	if !assert.NoError(t, err) {
		return
	}
	assert.Positive(t, st.MemTotal)
	assert.LessOrEqual(t, st.MemAvailable, st.MemTotal)
	assert.Positive(t, st.CPUUsec)
	assert.Positive(t, st.Processes)
}
