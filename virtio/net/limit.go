package net

import (
	"errors"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
)

// Limit bounds one direction of a device, in bytes and in packets, as
// Firecracker's rate_limiter does: a frame needs tokens of both.
type Limit struct {
	Bytes   ratelimit.Bucket `json:"bytes,omitzero"`
	Packets ratelimit.Bucket `json:"packets,omitzero"`
}

// Limits are a device's rate limits. RX is host to guest, TX guest to
// host.
type Limits struct {
	RX Limit `json:"rx,omitzero"`
	TX Limit `json:"tx,omitzero"`
}

// ErrBurstTooSmall refuses a byte bucket that could never hold a frame.
var ErrBurstTooSmall = errors.New("byte burst below the largest frame")

// Validate checks that every byte bucket can pass a largest frame in one
// go: otherwise a frame would wait for tokens that never accumulate.
func (l Limits) Validate() error {
	for _, b := range []ratelimit.Bucket{l.RX.Bytes, l.TX.Bytes} {
		if b.Rate != 0 && b.Size() < MaxFrame {
			return ErrBurstTooSmall
		}
	}
	return nil
}
