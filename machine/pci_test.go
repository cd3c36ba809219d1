package machine

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gvmm-dev/gvmm/internal/ratelog"
)

// TestNotifyEventFDWarningsAreBounded: a guest that lays one virtio BAR
// over another and toggles decoding makes every mapping's ioeventfd fail
// with EEXIST; it must not get a log line each time.
func TestNotifyEventFDWarningsAreBounded(t *testing.T) {
	var buf bytes.Buffer
	n := &notifiers{b: &bootedVM{m: &Machine{log: slog.New(slog.NewTextHandler(&buf, nil))}}}
	for i := 0; i < 1000; i++ {
		n.warn("virtio notify eventfd", "addr", "0xc0003000", "err", errors.New("file exists"))
	}
	assert.Equal(t, ratelog.Burst, strings.Count(buf.String(), "virtio notify eventfd"))
}
