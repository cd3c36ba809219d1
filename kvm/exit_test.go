package kvm

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestExitString(t *testing.T) {
	tests := []struct {
		exit Exit
		want string
	}{
		{Exit{Reason: ExitIO, IO: IOExit{Direction: IOOut, Port: 0x3f8, Size: 1, Count: 1}}, "IO out port 0x3f8 size 1 count 1"},
		{Exit{Reason: ExitMMIO, MMIO: MMIOExit{Addr: 0xd0000000, Data: make([]byte, 4)}}, "MMIO read 0xd0000000 len 4"},
		{Exit{Reason: ExitMMIO, MMIO: MMIOExit{Addr: 0x1000, IsWrite: true, Data: make([]byte, 2)}}, "MMIO write 0x1000 len 2"},
		{Exit{Reason: ExitSystemEvent, SystemEvent: SystemEventExit{Type: SystemEventReset}}, "SYSTEM_EVENT reset"},
		{Exit{Reason: ExitSystemEvent, SystemEvent: SystemEventExit{Type: 99}}, "SYSTEM_EVENT system-event(99)"},
		{Exit{Reason: ExitFailEntry, FailEntry: FailEntryExit{HardwareReason: 0x21, CPU: 2}}, "FAIL_ENTRY hardware reason 0x21 on cpu 2"},
		{Exit{Reason: ExitInternalError, Internal: InternalErrorExit{Suberror: 1, Data: []uint64{0x10}}}, "INTERNAL_ERROR suberror 1 data [0x10]"},
		{Exit{Reason: ExitDebug, Debug: DebugExit{Exception: 1, PC: 0x7c00}}, "DEBUG exception 1 at 0x7c00"},
		{Exit{Reason: ExitUnknown, HardwareExitReason: 0x30}, "UNKNOWN hardware reason 0x30"},
		{Exit{Reason: ExitHLT}, "HLT"},
		{Exit{Reason: ExitInterrupted}, "interrupted"},
		{Exit{Reason: 1000}, "exit(1000)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.exit.String())
		})
	}
}

func TestInternalSuberrorString(t *testing.T) {
	assert.Equal(t, "instruction emulation failed", InternalEmulation.String())
	assert.Equal(t, "unexpected exit reason", InternalUnexpectedExit.String())
	assert.Equal(t, "suberror 9", InternalSuberror(9).String())
}

func TestIODirectionString(t *testing.T) {
	assert.Equal(t, "in", IOIn.String())
	assert.Equal(t, "out", IOOut.String())
	assert.Equal(t, "io-direction(7)", IODirection(7).String())
}
