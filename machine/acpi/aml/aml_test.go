package aml

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	_ Term = Integer(0)
	_ Term = String("")
	_ Term = EISAID("")
	_ Term = name{}
	_ Term = namedBlock{}
	_ Term = pkg{}
	_ Term = resourceTemplate{}

	_ Descriptor = ioPort{}
	_ Descriptor = irqNoFlags{}
	_ Descriptor = address{}
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err)
	return b
}

func encode(t Term) ([]byte, error) { return t.AppendAML(nil) }

// The expected bytes of these cases were produced by iasl 20200925
// compiling the equivalent ASL.
func TestTermsMatchIASL(t *testing.T) {
	tests := []struct {
		name string
		term Term
		want string
	}{
		{"S5 package", Name("_S5", Package(Integer(5), Integer(5), Integer(0), Integer(0))),
			"08 5f53355f 12 08 04 0a05 0a05 00 00"},
		{"EISAID PNP0501", Name("_HID", EISAID("PNP0501")), "08 5f484944 0c 41d00501"},
		{"EISAID PNP0A08", EISAID("PNP0A08"), "0c 41d00a08"},
		{"string", Name("STRX", String("abc")), "08 53545258 0d 61626300"},
		{"COM1 device", Device("COM1",
			Name("_HID", EISAID("PNP0501")),
			Name("_UID", Integer(1)),
			Name("_CRS", ResourceTemplate(IO(0x3f8, 0x3f8, 1, 8), IRQNoFlags(4))),
		), "5b82 2b 434f4d31 085f4849440c41d00501 085f55494401 085f435253 11 10 0a0d 4701f803f8030108 221000 7900"},
		{"root bridge windows", ResourceTemplate(
			WordBusNumber(0, 0xff),
			WordIO(0x0d00, 0xffff),
			DWordMemory(NonCacheable, 0xc0000000, 0xfebfffff),
			QWordMemory(Cacheable, 0x8000000000, 0xffffffffff),
		), "11 4e06 0a6a" +
			"880d00 02 0c 00 0000 0000 ff00 0000 0001" +
			"880d00 01 0c 03 0000 000d ffff 0000 00f3" +
			"871700 00 0c 01 00000000 000000c0 ffffbffe 00000000 0000c03e" +
			"8a2b00 00 0c 03 0000000000000000 0000000080000000 ffffffffff000000 0000000000000000 0000000080000000" +
			"7900"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encode(tt.term)
			require.NoError(t, err)
			assert.Equal(t, unhex(t, tt.want), got)
		})
	}
}

// TestScopeMatchesIASL checks a whole DSDT body: iasl's output for
// Name(_S5, ...) followed by Scope(\_SB) { Device(COM1) {...} Device(PCI0)
// {...} }, with the scope name as iasl optimises it (no root prefix).
func TestScopeMatchesIASL(t *testing.T) {
	body := []Term{
		Name("_S5", Package(Integer(5), Integer(5), Integer(0), Integer(0))),
		Scope("_SB",
			Device("COM1",
				Name("_HID", EISAID("PNP0501")),
				Name("_UID", Integer(1)),
				Name("_CRS", ResourceTemplate(IO(0x3f8, 0x3f8, 1, 8), IRQNoFlags(4))),
			),
			Device("PCI0",
				Name("_HID", EISAID("PNP0A08")),
				Name("_CID", EISAID("PNP0A03")),
				Name("STRX", String("abc")),
				Name("_CRS", ResourceTemplate(
					WordBusNumber(0, 0xff),
					WordIO(0x0d00, 0xffff),
					DWordMemory(NonCacheable, 0xc0000000, 0xfebfffff),
					QWordMemory(Cacheable, 0x8000000000, 0xffffffffff),
				)),
			),
		),
	}
	want := "085f53355f1208040a050a050000104d0c5f53425f5b822b434f4d31085f4849440c41d00501085f55494401085f43525311100a0d4701f803f803010822100079005b82480950434930085f4849440c41d00a08085f4349440c41d00a0308535452580d61626300085f435253114e060a6a880d00020c0000000000ff0000000001880d00010c030000000dffff000000f3871700000c0100000000000000c0ffffbffe000000000000c03e8a2b00000c0300000000000000000000000080000000ffffffffff000000000000000000000000000000800000007900"
	got, err := appendTerms(nil, body)
	require.NoError(t, err)
	assert.Equal(t, unhex(t, want), got)
}

func TestInteger(t *testing.T) {
	tests := []struct {
		v    uint64
		want string
	}{
		{0, "00"},
		{1, "01"},
		{2, "0a02"},
		{0xff, "0aff"},
		{0x100, "0b0001"},
		{0xffff, "0bffff"},
		{0x10000, "0c00000100"},
		{0xffffffff, "0cffffffff"},
		{0x100000000, "0e0000000001000000"},
		{0xffffffffffffffff, "0effffffffffffffff"},
	}
	for _, tt := range tests {
		got, err := encode(Integer(tt.v))
		require.NoError(t, err)
		assert.Equal(t, unhex(t, tt.want), got, "%#x", tt.v)
	}
}

func TestNameString(t *testing.T) {
	tests := []struct {
		path string
		want string
	}{
		{"_S5", "5f53355f"},
		{"A", "415f5f5f"},
		{"_SB_", "5f53425f"},
		{`\_SB`, "5c 5f53425f"},
		{`\_SB.PCI0`, "5c 2e 5f53425f 50434930"},
		{`\_SB.PCI0.COM1`, "5c 2f03 5f53425f 50434930 434f4d31"},
		{"^^COM1", "5e5e 434f4d31"},
		{"^PCI0.S08", "5e 2e 50434930 5330385f"},
	}
	for _, tt := range tests {
		got, err := appendNameString(nil, tt.path)
		require.NoError(t, err, tt.path)
		assert.Equal(t, unhex(t, tt.want), got, tt.path)
	}
}

func TestPkgLength(t *testing.T) {
	tests := []struct {
		name string
		n    int // bytes following the PkgLength
		want string
	}{
		{"1-byte empty", 0, "01"},
		{"1-byte max", 62, "3f"},
		{"2-byte min", 63, "4104"},
		{"2-byte max", 0xfff - 2, "4fff"},
		{"3-byte min", 0xfff - 1, "810001"},
		{"3-byte max", 0xfffff - 3, "8fffff"},
		{"4-byte min", 0xfffff - 2, "c1000001"},
		{"4-byte max", 0xfffffff - 4, "cfffffff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := appendPkgLength(nil, tt.n)
			require.NoError(t, err)
			assert.Equal(t, unhex(t, tt.want), got)
		})
	}
	_, err := appendPkgLength(nil, 0xfffffff-3)
	var ee *EncodeError
	assert.ErrorAs(t, err, &ee)
}

// A 2-byte PkgLength inside a real package: 70 elements of one byte each.
func TestPackageTwoBytePkgLength(t *testing.T) {
	elems := make([]Term, 70)
	for i := range elems {
		elems[i] = Integer(0)
	}
	got, err := encode(Package(elems...))
	require.NoError(t, err)
	// 70 elements + NumElements = 71 bytes, +2 for the PkgLength = 73 = 0x49.
	assert.Equal(t, []byte{packageOp, 0x49, 0x04, 70}, got[:4])
	assert.Len(t, got, 1+2+71)
}

func TestEncodeErrors(t *testing.T) {
	tooMany := make([]Term, 256)
	for i := range tooMany {
		tooMany[i] = Integer(0)
	}
	tests := []struct {
		name string
		term Term
	}{
		{"empty name", Name("", Integer(0))},
		{"root only", Name(`\`, Integer(0))},
		{"lower case", Name("abc", Integer(0))},
		{"leading digit", Name("1ABC", Integer(0))},
		{"segment too long", Name("ABCDE", Integer(0))},
		{"empty segment", Scope(`\_SB..PCI0`)},
		{"trailing dot", Device("PCI0.")},
		{"root after parent", Name(`^\ABC`, Integer(0))},
		{"string with NUL", String("a\x00b")},
		{"non-ASCII string", String("é")},
		{"EISAID short", EISAID("PNP05")},
		{"EISAID lower vendor", EISAID("pnp0501")},
		{"EISAID bad digit", EISAID("PNP050G")},
		{"package too big", Package(tooMany...)},
		{"nested bad element", Package(Integer(1), String("\xff"))},
		{"bad term in device", Device("COM1", Name("_HID", EISAID("X")))},
		{"ISA IRQ 16", ResourceTemplate(IRQNoFlags(4, 16))},
		{"IO min above max", ResourceTemplate(IO(0x3f8, 0x2f8, 1, 8))},
		{"window min above max", ResourceTemplate(QWordMemory(Cacheable, 2, 1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := encode(tt.term)
			var ee *EncodeError
			require.True(t, errors.As(err, &ee), "got %v", err)
			assert.NotEmpty(t, ee.Error())
		})
	}
}

func FuzzNameString(f *testing.F) {
	for _, s := range []string{"_S5", `\_SB.PCI0`, "^^A.B.C", "", `\`, "a..b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		b, err := appendNameString(nil, path)
		if err != nil {
			return
		}
		// Every segment is four bytes after the prefixes.
		prefixes := len(path) - len(strings.TrimLeft(path, `\^`))
		segs := strings.Count(path, ".") + 1
		want := prefixes + 4*segs
		switch {
		case segs == 2:
			want++
		case segs > 2:
			want += 2
		}
		if len(b) != want {
			t.Fatalf("%q encoded to %d bytes, want %d", path, len(b), want)
		}
	})
}
