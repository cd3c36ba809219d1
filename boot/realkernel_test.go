package boot

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
)

const realMemSize = 512 << 20

// realKernelPath returns $GVMM_TEST_KERNEL, a stock x86-64 bzImage.
func realKernelPath(t *testing.T) string {
	path := os.Getenv("GVMM_TEST_KERNEL")
	if path == "" {
		t.Skip("GVMM_TEST_KERNEL is unset; set it to a stock bzImage (e.g. /tmp/kpkg/x/boot/vmlinuz-6.1.0-56-amd64) to run the real-kernel tests")
	}
	return path
}

func realConfig(t *testing.T, kernelPath string, initrd []byte) Config {
	f, err := os.Open(kernelPath)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	require.NoError(t, err)
	return Config{
		Kernel: f, KernelSize: st.Size(),
		Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
		Cmdline: "console=ttyS0 panic=-1",
		E820:    pcE820(realMemSize),
	}
}

func TestRealBzImage(t *testing.T) {
	path := realKernelPath(t)
	image, err := os.ReadFile(path)
	require.NoError(t, err)
	initrd := bytes.Repeat([]byte("initrd!!"), 1<<17)
	mem := newTestMemory(t, realMemSize)

	e, err := Load(mem, realConfig(t, path, initrd))
	require.NoError(t, err)
	assert.Equal(t, Long64, e.Mode)
	assert.Equal(t, uint64(0x100200), e.RIP)
	assert.Equal(t, uint64(BootParamsAddr), e.RSI)

	b, err := parseBzImage(io.NewSectionReader(bytes.NewReader(image), 0, int64(len(image))))
	require.NoError(t, err)
	loaded := readGuest(t, mem, HighMemStart, int(b.kernelSize))
	assert.True(t, bytes.Equal(image[b.setupSize:b.setupSize+int64(b.kernelSize)], loaded), "protected-mode kernel at 1 MiB")

	bp := readGuest(t, mem, BootParamsAddr, bootParamsSize)
	le := binary.LittleEndian
	assert.GreaterOrEqual(t, le.Uint16(bp[hdrVersion:]), uint16(minProtocol))
	assert.Equal(t, byte(typeOfLoaderUndefined), bp[hdrTypeOfLoader])
	addr := initrdAddr(t, mem, e)
	assert.Zero(t, addr%pageSize)
	assert.LessOrEqual(t, addr+uint64(len(initrd)), uint64(realMemSize))
	assert.Greater(t, addr+uint64(len(initrd)), uint64(realMemSize-pageSize), "initrd at the top of RAM")
	assert.LessOrEqual(t, addr+uint64(len(initrd))-1, uint64(le.Uint32(bp[hdrInitrdAddrMax:])))
	assert.False(t, span{addr, addr + uint64(len(initrd))}.overlaps(b.footprint), "initrd overlaps kernel %v", b.footprint)
	assert.Equal(t, initrd, readGuest(t, mem, memory.GuestAddress(addr), len(initrd)))
}

// extractVmlinux decompresses the ELF vmlinux embedded in a bzImage
// (payload_offset/payload_length) into dir. u-root's pkg/boot/bzimage
// does this too, but its decompressor imports (klauspost/compress,
// ulikunitz/xz, therootcompany/xz) are not in this module's go.sum, so
// the test uses compress/gzip or the xz tool instead.
func extractVmlinux(t *testing.T, image []byte, dir string) string {
	t.Helper()
	le := binary.LittleEndian
	setupSects := int(image[hdrSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects+1)*sectorSize + int(le.Uint32(image[0x248:]))
	payload := image[start : start+int(le.Uint32(image[0x24c:]))]
	var out []byte
	switch {
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		require.NoError(t, err)
		zr.Multistream(false) // the kernel's size word follows the stream
		out, err = io.ReadAll(zr)
		require.NoError(t, err)
	case bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")):
		cmd := exec.Command("xz", "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(payload)
		var err error
		out, err = cmd.Output()
		require.NoError(t, err, "xz is needed to extract an xz-compressed vmlinux")
	default:
		t.Fatalf("unsupported payload compression, magic % x", payload[:6])
	}
	path := filepath.Join(dir, "vmlinux")
	require.NoError(t, os.WriteFile(path, out, 0o644))
	return path
}

func TestRealVmlinuxPVH(t *testing.T) {
	image, err := os.ReadFile(realKernelPath(t))
	require.NoError(t, err)
	vmlinux := extractVmlinux(t, image, t.TempDir())

	f, err := elf.Open(vmlinux)
	require.NoError(t, err)
	defer f.Close()
	var load span
	load.start = ^uint64(0)
	var text *elf.Prog
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			load = span{min(load.start, p.Paddr), max(load.end, p.Paddr+p.Memsz)}
			if text == nil {
				text = p
			}
		}
	}
	require.NotNil(t, text)

	initrd := bytes.Repeat([]byte{0x99}, 3<<20)
	mem := newTestMemory(t, realMemSize)
	e, err := Load(mem, realConfig(t, vmlinux, initrd))
	require.NoError(t, err)

	assert.Equal(t, Protected32, e.Mode)
	assert.GreaterOrEqual(t, e.RIP, load.start)
	assert.Less(t, e.RIP, load.end, "PVH entry inside the kernel's load range %v", load)
	assert.Equal(t, uint64(PVHStartInfoAddr), e.RBX)
	magic, err := mem.Uint32(PVHStartInfoAddr)
	require.NoError(t, err)
	assert.Equal(t, uint32(pvhMagic), magic)

	want := make([]byte, 4096)
	_, err = text.ReadAt(want, 0)
	require.NoError(t, err)
	assert.Equal(t, want, readGuest(t, mem, memory.GuestAddress(text.Paddr), len(want)), "first page of the first segment")

	addr := initrdAddr(t, mem, e)
	assert.False(t, span{addr, addr + uint64(len(initrd))}.overlaps(load))
	assert.Equal(t, initrd, readGuest(t, mem, memory.GuestAddress(addr), len(initrd)))
}
