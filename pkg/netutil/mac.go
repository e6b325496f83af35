// Package netutil holds small network helpers shared by packages that have
// no other reason to import each other. It imports only the standard
// library, so using it links nothing more (the CNI plugin starts a process
// per call and pays for every package it links).
package netutil

import (
	"crypto/rand"
	"net"
)

// RandomMAC returns a random locally administered unicast MAC, for a node
// that has no vxlanTunnelMACAddr yet.
func RandomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac)
	mac[0] = mac[0]&^1 | 2
	return mac
}
