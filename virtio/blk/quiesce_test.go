package blk

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

func TestQuiesceWaitsAndHolds(t *testing.T) {
	path, orig := newImage(t, diskBytes)
	syncGate := make(chan struct{})
	r := startRig(t, path, Options{}, linuxFeatures, syncGate)
	q := r.drv.Queues[0]

	// A flush in progress, held inside fdatasync.
	q.AddChain([]virtiotest.Buf{{Data: header(TypeFlush, 0)}, {Len: 1, Write: true}})
	r.drv.Kick(0)
	require.Eventually(t, func() bool {
		r.disk.gate.mu.Lock()
		defer r.disk.gate.mu.Unlock()
		return r.disk.gate.busy == 1
	}, waitFor, time.Millisecond)

	quiesced := make(chan error, 1)
	go func() { quiesced <- r.disk.Quiesce() }()
	select {
	case err := <-quiesced:
		t.Fatalf("Quiesce returned (%v) with a request in progress", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(syncGate)
	require.True(t, r.msi.Wait(0, waitFor), "the flush did not complete")
	require.NoError(t, <-quiesced)
	assert.Equal(t, int32(2), r.syncs.Load(), "the guest's flush and Quiesce's own")
	assert.ErrorIs(t, r.disk.Quiesce(), ErrQuiesced)

	// A write queued while quiesced waits for Release.
	data := bytes.Repeat([]byte{0x5a}, 512)
	q.AddChain([]virtiotest.Buf{{Data: header(TypeOut, 0)}, {Data: data}, {Len: 1, Write: true}})
	r.drv.Kick(0)
	assert.False(t, r.msi.Wait(0, 100*time.Millisecond), "a request completed while quiesced")
	onDisk, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, orig[:512], onDisk[:512], "the image changed while quiesced")

	r.disk.Release()
	require.True(t, r.msi.Wait(0, waitFor), "the write did not complete after Release")
	onDisk, err = os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, data, onDisk[:512])
	r.disk.Release() // not quiesced: nothing happens
}

func TestResetWhileQuiesced(t *testing.T) {
	r := newRig(t, Options{}, linuxFeatures)
	require.NoError(t, r.disk.Quiesce())
	r.drv.Queues[0].AddChain([]virtiotest.Buf{{Data: header(TypeFlush, 0)}, {Len: 1, Write: true}})
	r.drv.Kick(0)
	reset := make(chan struct{})
	go func() { r.drv.SetStatus(0); close(reset) }()
	select {
	case <-reset:
	case <-time.After(waitFor):
		t.Fatal("a device reset hung on a quiesced disk")
	}
	r.disk.Release()
}
