package pci

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
)

func TestRootStateRoundTrip(t *testing.T) {
	bars := [NumBARs]BAR{{Size: 0x1000}, {Size: 0x2000, Kind: BARMem64}}
	r := newRoot(t, nil)
	d := newTestDevice(t, bars)
	_, err := r.Add(d)
	require.NoError(t, err)
	e := r.ECAM()
	wr(e, 1<<15|RegBAR0, 4, 0xc0100000) // the guest moved BAR 0
	wr(e, 1<<15|RegCommand, 2, CommandMemory|CommandBusMaster)
	wr(r.PortIO(), 0, 4, cf8(0, 1, 0, RegCommand))
	s := r.State()

	var events []mapping
	r2 := newRoot(t, &events)
	d2 := newTestDevice(t, bars)
	_, err = r2.Add(d2)
	require.NoError(t, err)
	require.NoError(t, r2.Restore(s))
	assert.Equal(t, s, r2.State())
	assert.Equal(t, uint64(0xc0100000), d2.cs.BARAddress(0))
	assert.Equal(t, []mapping{{1, 0xc0000000, 0x2000, true}, {0, 0xc0100000, 0x1000, true}}, sortByBAR(events),
		"restoring maps the BARs the guest had mapped")
	assert.Equal(t, uint64(CommandMemory|CommandBusMaster), rd(r2.PortIO(), configDataOffset, 2), "CONFIG_ADDRESS restored")
}

func TestRootRestoreKeepsReadOnlyBits(t *testing.T) {
	r := newRoot(t, nil)
	d := newTestDevice(t, [NumBARs]BAR{{Size: 0x1000}})
	_, err := r.Add(d)
	require.NoError(t, err)
	s := r.State()
	for _, f := range s.Functions {
		for i := range f {
			f[i] = 0xff
		}
	}
	require.NoError(t, r.Restore(s))
	assert.Equal(t, uint64(0x1af4), rd(d.cs, RegVendorID, 2), "identity is not taken from the snapshot")
	assert.Equal(t, uint64(0xfffff000), rd(d.cs, RegBAR0, 4), "BAR size bits stay")
}

func TestRootRestoreRejects(t *testing.T) {
	r := newRoot(t, nil)
	_, err := r.Add(newTestDevice(t, [NumBARs]BAR{{Size: 0x1000}}))
	require.NoError(t, err)
	good := r.State()
	for name, s := range map[string]RootState{
		"missing function": {Functions: good.Functions[:1]},
		"short space":      {Functions: [][]byte{good.Functions[0], make([]byte, 10)}},
	} {
		t.Run(name, func(t *testing.T) {
			assert.ErrorIs(t, r.Restore(s), devices.ErrBadState)
			assert.Equal(t, good, r.State())
		})
	}
}

func TestMSIXStateRoundTrip(t *testing.T) {
	f := newMSIXFixture(t, 3)
	f.control(msixEnable)
	f.program(0, 0xfee00000, 0x41, false)
	f.program(1, 0xfee01000, 0x42, true)
	require.NoError(t, f.m.Signal(1)) // held: masked
	s := f.m.State()

	g := newMSIXFixture(t, 3)
	require.NoError(t, g.m.Restore(s))
	assert.Equal(t, s, g.m.State())
	assert.Equal(t, [2]uint64{0xfee00000, 0x41}, g.router.routes[0], "unmasked vectors are routed again")
	assert.Equal(t, uint64(0b10), g.pba())
	g.program(1, 0xfee01000, 0x42, false)
	assert.Equal(t, []int{1}, g.router.fired(), "the held interrupt is delivered on unmask")

	assert.ErrorIs(t, g.m.Restore(MSIXState{Table: s.Table[:16], Pending: s.Pending}), devices.ErrBadState)
}
