package net

import (
	"errors"
	"fmt"

	"github.com/gvmm-dev/gvmm/devices"
)

// State is the device's own state, for snapshots: the address the
// guest's driver read and the rate limits in force. The features the
// driver took and the queues are the transport's; the configuration's
// status is always link up. Frames are not in it: the rx chains the
// device held unused are taken again from the restored ring
// (queue.Resume), and frames in the TAP's queue stay with the old TAP.
type State struct {
	MAC    [6]byte
	Limits Limits
}

// State returns the device's state.
func (d *Device) State() State { return State{MAC: d.mac, Limits: d.Limits()} }

// Restore loads s into a device just made, before its transport is
// restored (which activates it). s is untrusted: the MAC must be a
// unicast address and the limits valid.
func (d *Device) Restore(s State) error {
	if s.MAC[0]&1 != 0 || s.MAC == [6]byte{} {
		return fmt.Errorf("virtio-net: %w: MAC %x is not a unicast address", devices.ErrBadState, s.MAC)
	}
	if err := s.Limits.Validate(); err != nil {
		return fmt.Errorf("virtio-net: %w: rate limits: %w", devices.ErrBadState, err)
	}
	d.mac = s.MAC
	d.setLimits(s.Limits)
	return nil
}

// ErrQuiesced is returned by Quiesce on a device already quiesced.
var ErrQuiesced = errors.New("virtio-net: already quiesced")

// Quiesce stops the device touching guest memory and the TAP until
// Release: the rx goroutine delivers the frame it is reading, if any,
// then stops reading the TAP (frames wait in the kernel's TAP queue, as
// without rx buffers); the tx queue finishes the frame it is writing
// and takes no other. A pause does this so that a snapshot's memory and
// rings are those of one instant. A frame waiting for rate-limit tokens
// goes out at once: its tokens are already spent.
func (d *Device) Quiesce() error {
	d.runMu.Lock()
	if d.hold != nil {
		d.runMu.Unlock()
		return ErrQuiesced
	}
	d.hold = make(chan struct{})
	d.quiesced.Store(true)
	rx := d.rx
	d.runMu.Unlock()
	if rx != nil {
		if err := rx.park(); err != nil {
			d.Release()
			return err
		}
	}
	poke(d.txWake)
	// processTx holds txMu while it runs and checks quiesced between
	// frames: taking it waits for the frame in progress.
	d.txMu.Lock()
	d.txMu.Unlock()
	return nil
}

// Release lets a quiesced device move frames again; on a device not
// quiesced it does nothing. Frames the guest queued for transmission
// meanwhile go out now.
func (d *Device) Release() {
	d.runMu.Lock()
	hold, kick := d.hold, d.kick
	d.hold = nil
	d.quiesced.Store(false)
	d.runMu.Unlock()
	if hold == nil {
		return
	}
	if err := d.tap.resumeReads(); err != nil {
		d.log.Error("resuming the TAP's reads", "err", err)
	}
	close(hold)
	if kick != nil {
		kick(TxQueue)
	}
}

// holding returns the channel a quiesced device's rx goroutine waits on,
// or nil.
func (d *Device) holding() chan struct{} {
	d.runMu.Lock()
	defer d.runMu.Unlock()
	return d.hold
}
