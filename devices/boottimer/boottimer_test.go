package boottimer

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTimerFiresOnceOnMagic(t *testing.T) {
	for _, tt := range []struct {
		name   string
		writes [][]byte
		want   int
	}{
		{"magic", [][]byte{{Magic}}, 1},
		{"magic twice", [][]byte{{Magic}, {Magic}}, 1},
		{"other value", [][]byte{{Magic + 1}}, 0},
		{"wide write", [][]byte{{Magic, 0}}, 0},
		{"empty write", [][]byte{{}}, 0},
		{"after noise", [][]byte{{0}, {0xff}, {Magic}}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			tm := New(func() { n++ })
			for _, w := range tt.writes {
				tm.Write(0, w)
			}
			assert.Equal(t, tt.want, n)
			data := []byte{0xff, 0xff}
			tm.Read(0, data)
			assert.Equal(t, []byte{0, 0}, data)
		})
	}
}
