package kvm

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEventFDCounts(t *testing.T) {
	ev, err := NewEventFD()
	require.NoError(t, err)
	defer ev.Close()

	require.NoError(t, ev.Signal())
	require.NoError(t, ev.Signal())
	n, err := ev.Wait()
	require.NoError(t, err)
	assert.Equal(t, uint64(2), n)
}

func TestEventFDWaitHonoursDeadline(t *testing.T) {
	ev, err := NewEventFD()
	require.NoError(t, err)
	defer ev.Close()

	require.NoError(t, ev.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err = ev.Wait()
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

func TestEventFDWaitWakesOnSignal(t *testing.T) {
	ev, err := NewEventFD()
	require.NoError(t, err)
	defer ev.Close()

	got := make(chan uint64)
	go func() {
		n, _ := ev.Wait()
		got <- n
	}()
	require.NoError(t, ev.Signal())
	select {
	case n := <-got:
		assert.Equal(t, uint64(1), n)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Signal")
	}
}

func TestEventFDClosed(t *testing.T) {
	ev, err := NewEventFD()
	require.NoError(t, err)
	require.NoError(t, ev.Close())

	assert.ErrorIs(t, ev.Signal(), os.ErrClosed)
	assert.Error(t, ev.withFD(func(int32) error { return nil }))
}

func TestBlockingEventFD(t *testing.T) {
	ev, err := NewBlockingEventFD()
	require.NoError(t, err)
	defer ev.Close()

	got := make(chan uint64)
	go func() {
		n, _ := ev.Wait()
		got <- n
	}()
	select {
	case <-got:
		t.Fatal("Wait returned before any Signal")
	case <-time.After(50 * time.Millisecond):
	}
	require.NoError(t, ev.Signal())
	require.NoError(t, ev.Signal())
	select {
	case n := <-got:
		assert.LessOrEqual(t, n, uint64(2))
		assert.NotZero(t, n)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Signal")
	}
	assert.Error(t, ev.SetReadDeadline(time.Now()), "a blocking eventfd has no deadline")
}
