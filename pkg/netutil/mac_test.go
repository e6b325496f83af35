package netutil

import (
	"bytes"
	"testing"
)

func TestRandomMAC(t *testing.T) {
	mac := RandomMAC()
	unicast := len(mac) == 6 && mac[0]&1 == 0 && !bytes.Equal(mac, make([]byte, 6))
	if !unicast || mac[0]&2 == 0 {
		t.Errorf("RandomMAC() = %s, want a locally administered unicast MAC", mac)
	}
}
