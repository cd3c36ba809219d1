package machine

import (
	"errors"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	vnet "github.com/gvmm-dev/gvmm/virtio/net"
)

func TestDefaultMAC(t *testing.T) {
	a, b := DefaultMAC("tap0"), DefaultMAC("tap1")
	assert.Equal(t, a, DefaultMAC("tap0"), "stable")
	assert.NotEqual(t, a, b)
	for _, mac := range []net.HardwareAddr{a, b} {
		require.Len(t, mac, 6)
		assert.Zero(t, mac[0]&0x01, "unicast")
		assert.NotZero(t, mac[0]&0x02, "locally administered")
	}
}

func TestNetsValidation(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer f.Close()
	for _, tc := range []struct {
		name  string
		nets  []Net
		field string // "" for valid
	}{
		{"tap", []Net{{Tap: "tap0"}}, ""},
		{"file", []Net{{File: f}}, ""},
		{"tap and mac and limits", []Net{{Tap: "tap0", MAC: mac("52:54:00:00:00:01"),
			Limits: vnet.Limits{TX: vnet.Limit{Packets: ratelimit.Bucket{Rate: 100}}}}}, ""},
		{"neither", []Net{{}}, "Nets[0]"},
		{"both", []Net{{Tap: "tap0", File: f}}, "Nets[0]"},
		{"long name", []Net{{Tap: "a-very-long-tap-name"}}, "Nets[0].Tap"},
		{"twice", []Net{{Tap: "tap0"}, {Tap: "tap0"}}, "Nets[1].Tap"},
		{"multicast", []Net{{Tap: "tap0", MAC: mac("01:00:5e:00:00:01")}}, "Nets[0].MAC"},
		{"zero", []Net{{Tap: "tap0", MAC: mac("00:00:00:00:00:00")}}, "Nets[0].MAC"},
		{"eight bytes", []Net{{Tap: "tap0", MAC: mac("02:00:00:00:00:00:00:01")}}, "Nets[0].MAC"},
		{"burst below a frame", []Net{{Tap: "tap0", Limits: vnet.Limits{RX: vnet.Limit{Bytes: ratelimit.Bucket{Rate: 1000}}}}}, "Nets[0].Limits"},
		{"too many", make([]Net, maxNets+1), "Nets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := (&Config{Kernel: "k", Nets: tc.nets}).Validate()
			if tc.field == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidConfig)
			var ce *ConfigError
			require.True(t, errors.As(err, &ce))
			assert.Equal(t, tc.field, ce.Field, "%v", err)
		})
	}
}
