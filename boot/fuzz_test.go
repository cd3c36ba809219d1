package boot

import (
	"bytes"
	"testing"

	"github.com/gvmm-dev/gvmm/boot/internal/bootimage"
	"github.com/gvmm-dev/gvmm/memory"
)

// FuzzLoad feeds arbitrary kernel and initrd bytes to Load over a small
// guest memory: Load must return an error or an entry, never panic or
// write outside guest memory. Seeds cover both formats and a few near
// misses from TestLoadErrors; testdata/fuzz/FuzzLoad holds more.
func FuzzLoad(f *testing.F) {
	const memSize = 8 << 20
	f.Add(makeBzImage(), []byte("initrd"))
	f.Add(makeBzImage(put8(hdrSetupSects, 0), put8(hdrRelocatableKernel, 0)), []byte{})
	f.Add(makeBzImage()[:0x260], []byte{})
	f.Add(bootimage.ELF(bootimage.Segs()), []byte("initrd"))
	f.Add(withSegs(func(s []bootimage.Seg) []bootimage.Seg { s[1].Data = bootimage.PVHNote(0x300000); return s }), []byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 600), []byte{1})

	mem := newTestMemory(f, memSize) // reused: contents do not matter, bounds do
	f.Fuzz(func(t *testing.T, kernel, initrd []byte) {
		e, err := Load(mem, Config{
			Kernel: bytes.NewReader(kernel), KernelSize: int64(len(kernel)),
			Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
			Cmdline: "console=ttyS0",
			E820:    pcE820(memSize),
		})
		if err != nil {
			if e != nil {
				t.Fatalf("entry %+v returned with error %v", e, err)
			}
			return
		}
		if e.Mode != Long64 && e.Mode != Protected32 {
			t.Fatalf("entry with mode %v", e.Mode)
		}
		// The vCPU starts at an address in guest RAM, with its boot
		// structure (boot_params in RSI or hvm_start_info in RBX) there.
		info := e.RSI
		if e.Mode == Protected32 {
			info = e.RBX
		}
		for _, a := range []uint64{e.RIP, info} {
			if _, err := mem.Slice(memory.GuestAddress(a), 1); err != nil {
				t.Fatalf("entry %+v points outside guest memory: %v", e, err)
			}
		}
	})
}
