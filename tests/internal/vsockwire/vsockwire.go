// Package vsockwire is what the vsock tests' guest (tests/guestvsock) and
// host side (tests/vsock) agree on: the guest's services, its commands
// and the data pattern both generate, so that neither needs the other's
// copy of a payload to check it. The network tests' guests serve the
// same services on TCP.
package vsockwire

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
)

// The guest's services, on vsock ports.
const (
	// PortEcho sends back what it reads until EOF, then closes.
	PortEcho = 5000
	// PortSink reads until EOF and answers "<bytes> <sha256>\n".
	PortSink = 5001
	// PortSource reads "<bytes>\n" and writes that many bytes of Pattern,
	// then closes.
	PortSource = 5002
	// PortStall reads nothing, ever.
	PortStall = 5003
	// PortControl takes one command a connection, "dial <port> <bytes>\n":
	// the guest connects to the host (CID 2) on port, writes bytes of
	// Pattern, shuts its write side, reads the answer until EOF and
	// replies "ok <answer>" or "error <reason>", one line.
	PortControl = 5004
)

// Pattern fills p with the pattern's bytes from offset off: no short
// period, so that a lost, repeated or reordered chunk changes the sum.
func Pattern(p []byte, off uint64) {
	for i := range p {
		n := off + uint64(i)
		p[i] = byte(n) ^ byte(n>>8)*7 ^ byte(n>>16)*13 ^ byte(n>>24)*31
	}
}

// WritePattern writes n bytes of Pattern to w.
func WritePattern(w io.Writer, n uint64) error {
	buf := make([]byte, 64<<10)
	for off := uint64(0); off < n; {
		k := min(uint64(len(buf)), n-off)
		Pattern(buf[:k], off)
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		off += k
	}
	return nil
}

// Sum reads r to EOF and returns the byte count and SHA-256 of what it read.
func Sum(r io.Reader) (uint64, string, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return uint64(n), hex.EncodeToString(h.Sum(nil)), err
}

// PatternSum is Sum of n bytes of Pattern.
func PatternSum(n uint64) string {
	h := sha256.New()
	_ = WritePattern(h, n) // a hash never fails
	return hex.EncodeToString(h.Sum(nil))
}
