package console

import (
	"bytes"
	"regexp"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func filtered(t testing.TB, in []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	n, err := NewFilter(&out).Write(in)
	require.NoError(t, err)
	require.Equal(t, len(in), n)
	return out.Bytes()
}

func TestFilterKeepsTextAndColoursOnly(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"text", "login: root\r\n", "login: root\r\n"},
		{"tab and backspace", "a\tb\bc", "a\tb\bc"},
		{"utf-8", "héllo → 世界 😀", "héllo → 世界 😀"},
		{"replacement character", "\uFFFD", "\uFFFD"},
		{"colours", "\x1b[1;31mred\x1b[0m \x1b[38;5;208mo\x1b[m \x1b[38:2::1:2:3mt", "\x1b[1;31mred\x1b[0m \x1b[38;5;208mo\x1b[m \x1b[38:2::1:2:3mt"},
		{"window title (OSC, BEL)", "a\x1b]0;pwned\x07b", "ab"},
		{"window title (OSC, ST)", "a\x1b]2;pwned\x1b\\b", "ab"},
		{"clipboard (OSC 52)", "a\x1b]52;c;cm0gLXJmIH4K\x07b", "ab"},
		{"DCS, e.g. a key redefinition", "a\x1bP0|17/726d202d7266\x1b\\b", "ab"},
		{"APC, PM and SOS", "a\x1b_x\x1b\\b\x1b^y\x1b\\c\x1bXz\x1b\\d", "abcd"},
		{"cursor moves and erase", "a\x1b[2J\x1b[H\x1b[10;20Hb\x1b[Kc", "abc"},
		{"private mode: hidden cursor, alternate screen", "a\x1b[?25l\x1b[?1049hb", "ab"},
		{"device status report (makes the terminal type)", "a\x1b[6nb\x1b[cc\x1b[>cd", "abcd"},
		{"SGR look-alike with an intermediate", "a\x1b[1$mb", "ab"},
		{"SGR look-alike with a private prefix", "a\x1b[>4;2mb", "ab"},
		{"ESC sequences: reset, charset, keypad", "a\x1bcb\x1b(0c\x1b=d\x1b7e", "abcde"},
		{"C0 controls", "a\x00\x01\x05\x07\x0b\x0c\x0e\x0f\x7fb", "ab"},
		{"C1 controls in UTF-8", "a\u009b31mb\u009d0;x\u009cc", "a31mb0;xc"},
		{"8-bit C1 bytes (invalid UTF-8)", "a\x9b2Jb\x9d0;x\x07c", "a2Jb0;xc"},
		{"invalid UTF-8", "a\xff\xc0\xe2\x28\xa1b", "a(b"},
		{"CAN ends a sequence", "a\x1b[1\x18;31mb", "a;31mb"},
		{"ESC restarts a sequence", "a\x1b[1\x1b[32mb", "a\x1b[32mb"},
		{"controls inside CSI are dropped", "a\x1b[3\n1mb", "a\x1b[31mb"},
		{"ESC ends a string and starts a sequence", "a\x1b]0;t\x1b[31mb", "a\x1b[31mb"},
		{"unterminated string swallows the rest", "a\x1b]0;pwned\r\nrest", "a"},
		{"overlong SGR is dropped", "a\x1b[" + string(bytes.Repeat([]byte("1;"), 40)) + "mb", "ab"},
		{"escape at the end", "a\x1b", "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, string(filtered(t, []byte(tt.in))))

			// Byte by byte, as a slow console delivers it, the same.
			var out bytes.Buffer
			f := NewFilter(&out)
			for i := range len(tt.in) {
				_, err := f.Write([]byte{tt.in[i]})
				require.NoError(t, err)
			}
			assert.Equal(t, tt.want, out.String())
		})
	}
}

// safe matches what a Filter may write: text without controls but LF, CR,
// tab and backspace, and SGR sequences.
var safe = regexp.MustCompile(`^(?:[^\x00-\x1f\x7f\x{80}-\x{9f}]|[\n\r\t\x08]|\x1b\[[0-9;:]*m)*$`)

func FuzzFilter(f *testing.F) {
	f.Add([]byte("\x1b[1;31mred\x1b[0m\r\n"), uint8(3))
	f.Add([]byte("\x1b]0;title\x07\x1bP+q\x1b\\\x9b6n\u009b6n"), uint8(1))
	f.Add([]byte("héllo\xe2\x28\xa1\x1b[?25l\x1b(0"), uint8(7))
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		whole := filtered(t, in)
		if !utf8.Valid(whole) || !safe.Match(whole) {
			t.Fatalf("unsafe output %q from %q", whole, in)
		}
		if len(whole) > len(in) {
			t.Fatalf("output %d bytes from %d", len(whole), len(in))
		}
		// Split anywhere, the same output.
		var out bytes.Buffer
		fl := NewFilter(&out)
		for rest := in; len(rest) > 0; {
			n := min(len(rest), int(split)+1)
			if _, err := fl.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if !bytes.Equal(whole, out.Bytes()) {
			t.Fatalf("split every %d: %q, whole: %q", int(split)+1, out.Bytes(), whole)
		}
	})
}
