package main

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
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

// A container's processes are those whose root is its root: this
// process's root is "/", none has a root that does not exist.
func TestRootPids(t *testing.T) {
	pids, err := rootPids("/")
	require.NoError(t, err)
	assert.Contains(t, pids, os.Getpid())
	pids, err = rootPids("/share/none")
	require.NoError(t, err)
	assert.Empty(t, pids)
}

func TestCreateRefusesBadContainers(t *testing.T) {
	s := newServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, req := range []agent.Request{
		{Op: agent.OpCreate, ContainerID: "../etc", Process: &agent.Process{Args: []string{"sh"}}, Container: &agent.Container{}},
		{Op: agent.OpCreate, ContainerID: "", Process: &agent.Process{Args: []string{"sh"}}, Container: &agent.Container{}},
		{Op: agent.OpCreate, ContainerID: "c1", ID: "e1", Process: &agent.Process{Args: []string{"sh"}}},
	} {
		resp, _ := s.handle(&req)
		assert.NotEmpty(t, resp.Error, "%+v", req)
	}
	resp, _ := s.handle(&agent.Request{Op: agent.OpPids, ContainerID: "c1"})
	assert.True(t, resp.NotFound, "pids of no container: %+v", resp)
}
