// Package layout is the disk layout tests/snapshot shares with its guest,
// tests/guestsnapshot.
package layout

const (
	// Block is the unit of the guest's O_DIRECT accesses.
	Block = 4096
	// The guest writes its count, a little-endian uint64, at offset 0.
	CountOffset = 0
	// CommandOffset is where the host writes PowerOffCommand.
	CommandOffset   = Block
	PowerOffCommand = "POWEROFF"
)
