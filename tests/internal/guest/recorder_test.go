package guest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestRecorderCollectsReports(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		key    string
		want   []string
	}{
		{"whole lines", []string{"GVMMTEST a=1\nGVMMTEST a=2\n"}, "a", []string{"1", "2"}},
		{"split across writes", []string{"GVMM", "TEST a=x=y\r", "\n"}, "a", []string{"x=y"}},
		{"after kernel noise", []string{"[ 1.0] oops GVMMTEST a=3\n"}, "a", []string{"3"}},
		{"unfinished line", []string{"GVMMTEST a=4"}, "a", nil},
		{"other lines", []string{"hello a=5\n"}, "a", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Recorder
			all := ""
			for _, w := range tt.writes {
				n, err := r.Write([]byte(w))
				assert.NoError(t, err)
				assert.Equal(t, len(w), n)
				all += w
			}
			assert.Equal(t, tt.want, r.Values(tt.key))
			assert.Equal(t, tt.want != nil, r.Has(tt.key))
			assert.Equal(t, all, r.String())
		})
	}
}

func TestRecorderNotesWhenAKeyFirstArrived(t *testing.T) {
	var r Recorder
	_, ok := r.FirstAt("a")
	assert.False(t, ok)
	before := time.Now()
	r.Write([]byte("GVMMTEST a=1\n"))
	first, ok := r.FirstAt("a")
	assert.True(t, ok)
	assert.False(t, first.Before(before))
	time.Sleep(time.Millisecond)
	r.Write([]byte("GVMMTEST a=2\n"))
	again, _ := r.FirstAt("a")
	assert.Equal(t, first, again)
}
