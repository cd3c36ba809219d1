package payload

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPVHIsAnELFWithItsEntryNote(t *testing.T) {
	code := []byte{0xf4, 0xeb, 0xfd}
	f, err := elf.NewFile(bytes.NewReader(PVH(code)))
	require.NoError(t, err)
	require.Len(t, f.Progs, 2)

	load, note := f.Progs[0], f.Progs[1]
	assert.Equal(t, elf.PT_LOAD, load.Type)
	assert.Equal(t, uint64(Entry), load.Paddr)
	seg, err := io.ReadAll(load.Open())
	require.NoError(t, err)
	assert.Equal(t, code, seg[:len(code)])
	assert.Equal(t, make([]byte, len(seg)-len(code)), seg[len(code):], "zero past the code")

	require.Equal(t, elf.PT_NOTE, note.Type)
	n, err := io.ReadAll(note.Open())
	require.NoError(t, err)
	require.Len(t, n, 20)
	assert.Equal(t, []uint32{4, 4, 18}, []uint32{
		binary.LittleEndian.Uint32(n), binary.LittleEndian.Uint32(n[4:]), binary.LittleEndian.Uint32(n[8:]),
	}, "namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY")
	assert.Equal(t, "Xen\x00", string(n[12:16]))
	assert.Equal(t, uint32(Entry), binary.LittleEndian.Uint32(n[16:]))
}

func TestPVHRefusesCodeLargerThanItsSegment(t *testing.T) {
	assert.Panics(t, func() { PVH(make([]byte, 4097)) })
}
