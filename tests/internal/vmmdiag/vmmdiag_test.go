package vmmdiag

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The test process itself: its threads are listed, each with a state and
// a CPU time; a busy one shows ticks.
func TestSnapshot(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	s := Snapshot(os.Getpid(), 300*time.Millisecond)
	assert.Contains(t, s, "VMM pid "+strconv.Itoa(os.Getpid()))
	assert.Regexp(t, regexp.MustCompile(`threads \(tid state cpu-ticks\):( \d+ [RSDZTI] \d+)+\n`), s)
	assert.Regexp(t, regexp.MustCompile(` R [1-9]\d*`), s, "the spinning goroutine's thread")
	assert.Contains(t, s, "KVM counters moved:")
}

func TestSnapshotOfAGoneProcess(t *testing.T) {
	assert.Contains(t, Snapshot(1<<22+1, time.Millisecond), "none (the process is gone)")
}

// The kernel log's tail is at most n lines; root can always read it,
// others may be refused (dmesg_restrict), which it says.
func TestKernelLog(t *testing.T) {
	s := KernelLog(3)
	if os.Geteuid() != 0 && strings.HasPrefix(s, "(kernel log unreadable: ") {
		return
	}
	assert.NotContains(t, s, "unreadable")
	assert.LessOrEqual(t, len(strings.Split(s, "\n")), 3, "%q", s)
}
