package console

import (
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair the way posix_openpt, unlockpt and
// ptsname do, and returns the terminal (slave) side.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	ptm := os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { ptm.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	require.NoError(t, err)
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("cannot open the terminal side: %v", err)
	}
	t.Cleanup(func() { pts.Close() })
	return pts
}

func termios(t *testing.T, f *os.File) *unix.Termios {
	t.Helper()
	var tio *unix.Termios
	require.NoError(t, control(f, func(fd int) error {
		var err error
		tio, err = unix.IoctlGetTermios(fd, unix.TCGETS)
		return err
	}))
	return tio
}

func TestIsTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	f, err := os.CreateTemp(t.TempDir(), "notatty")
	require.NoError(t, err)
	defer f.Close()

	tests := []struct {
		name string
		f    *os.File
	}{
		{"pipe read end", r},
		{"pipe write end", w},
		{"regular file", f},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.False(t, IsTerminal(tt.f))
			_, err := MakeRaw(tt.f)
			assert.ErrorIs(t, err, unix.ENOTTY)
		})
	}
}

func TestMakeRawRestore(t *testing.T) {
	pts := openPTY(t)
	require.True(t, IsTerminal(pts))
	before := termios(t, pts)
	require.NotZero(t, before.Lflag&unix.ICANON, "a new pty starts cooked")

	restore, err := MakeRaw(pts)
	require.NoError(t, err)
	raw := termios(t, pts)
	assert.Zero(t, raw.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG|unix.IEXTEN))
	assert.Zero(t, raw.Iflag&(unix.ICRNL|unix.IXON|unix.BRKINT))
	assert.Zero(t, raw.Oflag&unix.OPOST)
	assert.Equal(t, uint32(unix.CS8), raw.Cflag&unix.CSIZE)
	assert.Equal(t, uint8(1), raw.Cc[unix.VMIN])
	assert.Equal(t, uint8(0), raw.Cc[unix.VTIME])

	require.NoError(t, restore())
	assert.Equal(t, before, termios(t, pts))
}
