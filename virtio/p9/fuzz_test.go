package p9

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/virtio/p9/p9test"
)

// FuzzParseRequest checks that ParseRequest never panics and that what
// it accepts is framed as the server reads it: the size field is the
// length, within msize, and reads and directory reads fit msize.
func FuzzParseRequest(f *testing.F) {
	for _, m := range validRequests() {
		f.Add(m, uint32(MaxMessageSize))
	}
	f.Fuzz(func(t *testing.T, data []byte, msize uint32) {
		r, err := ParseRequest(data, msize, MaxMessageSize)
		if err != nil {
			return
		}
		le := binary.LittleEndian
		if int(le.Uint32(r.Msg)) != len(r.Msg) || len(r.Msg) < HeaderSize {
			t.Fatalf("accepted a message whose size field is %d for %d bytes", le.Uint32(r.Msg), len(r.Msg))
		}
		if r.Type != msgTversion && uint64(len(r.Msg)) > uint64(msize) {
			t.Fatalf("accepted %d bytes with msize %d", len(r.Msg), msize)
		}
		switch r.Type {
		case msgTversion:
			if le.Uint32(r.Msg[HeaderSize:]) > MaxMessageSize {
				t.Fatalf("Tversion msize %d passed", le.Uint32(r.Msg[HeaderSize:]))
			}
		case msgTread, msgTreaddir:
			if uint64(le.Uint32(r.Msg[HeaderSize+12:]))+rreadHeader > uint64(msize) {
				t.Fatalf("count %d with msize %d", le.Uint32(r.Msg[HeaderSize+12:]), msize)
			}
		}
	})
}

// FuzzSession sends an arbitrary message to a served folder after the
// kernel's Tversion and Tattach, and fid 1 walked to a file and opened
// for reading and writing (its Tread and Twrite are the device's own):
// it is answered, and the session still serves the next request. The
// folder holds a file, a folder and a symlink out of it for the message
// to reach for.
func FuzzSession(f *testing.F) {
	for _, m := range validRequests()[2:] {
		f.Add(m)
	}
	f.Add(p9test.Msg(msgTread, 7, uint32(1), uint64(2), uint32(100)))
	f.Add(p9test.Msg(msgTwrite, 7, uint32(1), uint64(2), uint32(3), []byte("abc")))
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		dir := filepath.Join(root, "share")
		for _, err := range []error{
			os.Mkdir(dir, 0o755), os.Mkdir(filepath.Join(dir, "a"), 0o755),
			os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644),
			os.WriteFile(filepath.Join(root, "secret"), []byte("secret"), 0o644),
			os.Symlink("../secret", filepath.Join(dir, "l")),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		r := newRig(t, dir, false, 8192, 1<<20)
		r.roundTrip(p9test.Msg(msgTversion, noTag, uint32(8192), "9P2000.L"))
		if e := lerrno(r.roundTrip(p9test.Msg(msgTattach, 1000, uint32(0), uint32(0xffffffff), "", "", uint32(0)))); e != 0 {
			t.Fatalf("attach: errno %d", e)
		}
		for _, m := range [][]byte{
			p9test.Msg(msgTwalk, 1002, uint32(0), uint32(1), uint16(1), "f"),
			p9test.Msg(msgTlopen, 1003, uint32(1), uint32(unix.O_RDWR)),
		} {
			if e := lerrno(r.roundTrip(m)); e != 0 {
				t.Fatalf("opening f: errno %d", e)
			}
		}
		r.roundTrip(data)
		if resp := r.roundTrip(p9test.Msg(msgTgetattr, 1001, uint32(0), uint64(0x3fff))); len(resp) < HeaderSize {
			t.Fatalf("no answer to Tgetattr after the message")
		}
		if b, err := os.ReadFile(filepath.Join(root, "secret")); err != nil || string(b) != "secret" {
			t.Fatalf("the file outside the share changed: %q, %v", b, err)
		}
	})
}
