package queue_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

func TestResumeTakesUnreturnedChainsAgain(t *testing.T) {
	drv, q, _ := newQueue(t, 8, false, false)
	var c queue.Chain
	first, _ := drv.AddChain([]virtiotest.Buf{{Data: []byte("a")}})
	second, _ := drv.AddChain([]virtiotest.Buf{{Data: []byte("b")}})
	for range 2 {
		ok, err := q.Pop(&c)
		require.NoError(t, err)
		require.True(t, ok)
	}
	require.NoError(t, q.Push(first, 0)) // second is still being executed

	// A new process's queue over the same memory.
	q2, err := queue.New(drv.Mem, drv.Config(false, false), virtiotest.NewInterrupt())
	require.NoError(t, err)
	q2.Resume()
	next, used := q2.Position()
	assert.Equal(t, uint16(1), next)
	assert.Equal(t, uint16(1), used)
	ok, err := q2.Pop(&c)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, second, c.Head, "the chain in flight is taken again")
	require.NoError(t, q2.Push(c.Head, 0))
	assert.Equal(t, uint16(2), drv.UsedIdx())
}

func TestResumeHostileUsedIndex(t *testing.T) {
	drv, _, _ := newQueue(t, 8, false, false)
	drv.AddChain([]virtiotest.Buf{{Data: []byte("a")}})
	require.NoError(t, drv.Mem.PutUint16(drv.UsedR+2, 0x8000)) // far from avail.idx
	q, err := queue.New(drv.Mem, drv.Config(false, false), virtiotest.NewInterrupt())
	require.NoError(t, err)
	q.Resume()
	var c queue.Chain
	_, err = q.Pop(&c)
	assert.ErrorIs(t, err, queue.ErrAvailOverrun, "the queue fails like a broken driver's")
}
