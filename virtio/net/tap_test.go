package net

import (
	"os"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestTapFromFileRefusesOtherFiles(t *testing.T) {
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	_, err = TapFromFile(f)
	require.ErrorIs(t, err, ErrNotTap)
	// Taken over either way: closed.
	assert.ErrorIs(t, f.Close(), os.ErrClosed)
}

func TestOpenTapRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "sixteen-bytes-xx"} {
		_, err := OpenTap(name)
		assert.ErrorContains(t, err, "want a name of 1 to 15 bytes", "%q", name)
	}
}

// TestTapFrameIOAllocatesNothing: a frame each way, scatter-gather,
// costs no allocation once the iovec arrays have grown.
func TestTapFrameIOAllocatesNothing(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	tap, err := newTestTap(os.NewFile(uintptr(fds[0]), "tap"), func(int) error { return nil })
	require.NoError(t, err)
	defer tap.Close()
	peer := os.NewFile(uintptr(fds[1]), "peer")
	defer peer.Close()
	out := [][]byte{pattern(HeaderSize, 1), pattern(1000, 2), {}, pattern(500, 3)}
	in := [][]byte{make([]byte, 700), make([]byte, 700), make([]byte, 700)}
	raw := make([]byte, 2000)
	var sent, got, back int
	allocs := testing.AllocsPerRun(100, func() {
		sent, err = tap.writev(out)
		require.NoError(t, err)
		back, err = unix.Read(fds[1], raw)
		require.NoError(t, err)
		_, err = unix.Write(fds[1], raw[:back])
		require.NoError(t, err)
		got, err = tap.readv(in, nil)
		require.NoError(t, err)
	})
	assert.Zero(t, allocs)
	want := slices.Concat(out...)
	assert.Equal(t, len(want), sent)
	assert.Equal(t, want, slices.Concat(in...)[:got])
}
