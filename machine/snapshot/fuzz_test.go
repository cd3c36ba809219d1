package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"testing"
)

// envelope seals payload as a current state file, so the fuzzer reaches
// the decoder and the validation behind the checksum.
func envelope(payload []byte) []byte {
	h := header{Magic: magic, Version: Version, Length: uint64(len(payload)), Sum: sha256.Sum256(payload)}
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, h)
	buf.Write(payload)
	return buf.Bytes()
}

// FuzzParse feeds Parse hostile state files: raw bytes, and payloads
// sealed with a valid envelope. It must return an error or a State whose
// shape is within bounds, never panic.
func FuzzParse(f *testing.F) {
	good, err := Marshal(sample())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, false)
	f.Add(good[headerSize:], true)
	f.Add([]byte(`{"Config":{"CPUs":1,"Memory":4096},"MemorySize":4096,"VCPUs":[{"CPUID":[{}]}],"VM":{"IRQChips":[{},{},{}]}}`), true)
	f.Add([]byte("GVMMSNAP"), false)
	f.Fuzz(func(t *testing.T, data []byte, seal bool) {
		if seal {
			data = envelope(data)
		}
		s, err := Parse(data)
		if err != nil {
			return
		}
		if len(s.VCPUs) != s.Config.CPUs || len(s.VM.IRQChips) != numIRQChips {
			t.Fatalf("Parse accepted a state of the wrong shape: %d vCPUs for %d", len(s.VCPUs), s.Config.CPUs)
		}
	})
}
