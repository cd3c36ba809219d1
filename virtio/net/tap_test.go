package net

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
