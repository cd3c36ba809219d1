package machine

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestReserveProcsKeepsAnIdleP(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	reserveProcs(1)
	assert.Equal(t, 2, runtime.GOMAXPROCS(0), "one vCPU, one P in reserve")
	reserveProcs(3)
	assert.Equal(t, 5, runtime.GOMAXPROCS(0), "a second machine counts too")
	releaseProcs(3)
	releaseProcs(1)
	assert.Equal(t, 5, runtime.GOMAXPROCS(0), "never lowered: the user may have set it")
	runtime.GOMAXPROCS(8)
	reserveProcs(2)
	assert.Equal(t, 8, runtime.GOMAXPROCS(0), "enough already")
	releaseProcs(2)
}
