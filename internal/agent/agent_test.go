package agent

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A message is read up to its line's end: the stream after it is left.
func TestReadLeavesTheStream(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, Request{Op: OpStdout, ID: "e1"}))
	buf.WriteString("raw bytes")
	var req Request
	require.NoError(t, Read(&buf, &req))
	assert.Equal(t, Request{Op: OpStdout, ID: "e1"}, req)
	rest, err := io.ReadAll(&buf)
	require.NoError(t, err)
	assert.Equal(t, "raw bytes", string(rest))
}

func TestReadRefusesBadMessages(t *testing.T) {
	for name, tc := range map[string]struct {
		in   io.Reader
		want string
	}{
		"empty":     {strings.NewReader(""), "EOF"},
		"truncated": {strings.NewReader(`{"op":"st`), "unexpected EOF"},
		"malformed": {strings.NewReader("{\n"), "malformed"},
		"endless":   {io.MultiReader(strings.NewReader(`{"op":"`), endless{}), "over"},
	} {
		t.Run(name, func(t *testing.T) {
			var req Request
			err := Read(tc.in, &req)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func TestResponseErr(t *testing.T) {
	assert.NoError(t, (&Response{}).Err())
	assert.ErrorIs(t, (&Response{NotFound: true, Error: "exec x"}).Err(), ErrNotFound)
	assert.EqualError(t, (&Response{Error: "boom"}).Err(), "boom")
}

// The shim reads the guest's responses with Read: whatever the guest
// sends, it gets a message or an error, within MaxMessage.
func FuzzRead(f *testing.F) {
	f.Add([]byte(`{"pid":7,"status":3,"exited_at":"2026-01-02T03:04:05Z"}` + "\n"))
	f.Add([]byte(`{"error":"x","not_found":true}` + "\n"))
	f.Add([]byte(`{"stats":{"mem_total":1}}` + "\nrest"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp Response
		r := bytes.NewReader(data)
		if err := Read(r, &resp); err != nil {
			return
		}
		assert.LessOrEqual(t, len(data)-r.Len(), MaxMessage+1, "read past the message's bound")
		_ = resp.Err()
	})
}
