package vmmdiag

import (
	"os"
	"regexp"
	"strconv"
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
