package v3

import "testing"

func TestNodeValidation(t *testing.T) {
	runInfraBad(t, []infraBad{
		{"v4 address without prefix", infraDoc("Node", "n1", "bgp:\n  ipv4Address: 10.0.0.1"), "spec.bgp.ipv4Address", "not an address in CIDR form"},
		{"v4 address is v6", infraDoc("Node", "n1", "bgp:\n  ipv4Address: fd00::1/64"), "spec.bgp.ipv4Address", "not an IPv4 address"},
		{"v6 address is v4", infraDoc("Node", "n1", "bgp:\n  ipv6Address: 10.0.0.1/24"), "spec.bgp.ipv6Address", "not an IPv6 address"},
		{"rr cluster id not ipv4", infraDoc("Node", "n1", "bgp:\n  routeReflectorClusterID: 224.0.0.x"), "spec.bgp.routeReflectorClusterID", "not a valid IPv4 address"},
		{"rr cluster id v6", infraDoc("Node", "n1", "bgp:\n  routeReflectorClusterID: \"::1\""), "spec.bgp.routeReflectorClusterID", "not an IPv4 address"},
		{"ipip tunnel addr", infraDoc("Node", "n1", "bgp:\n  ipv4IPIPTunnelAddr: 10.0.0.1/32"), "spec.bgp.ipv4IPIPTunnelAddr", "not a valid IPv4 address"},
		{"vxlan tunnel addr", infraDoc("Node", "n1", "ipv4VXLANTunnelAddr: nope"), "spec.ipv4VXLANTunnelAddr", "not a valid IPv4 address"},
		{"vxlan mac", infraDoc("Node", "n1", "vxlanTunnelMACAddr: 66:aa:bb"), "spec.vxlanTunnelMACAddr", "not a valid MAC address"},
		{"orchref without orchestrator", infraDoc("Node", "n1", "orchRefs:\n- nodeName: n1"), "spec.orchRefs[0].orchestrator", "required"},
		{"bad address", infraDoc("Node", "n1", "addresses:\n- address: 10.0.0.300"), "spec.addresses[0].address", "not a valid IP address or CIDR"},
		{"wireguard v4", infraDoc("Node", "n1", "wireguard:\n  interfaceIPv4Address: fd00::1"), "spec.wireguard.interfaceIPv4Address", "not an IPv4 address"},
		{"wireguard key", infraDoc("Node", "n1", "") + "status:\n  wireguardPublicKey: not-a-key\n", "status.wireguardPublicKey", "not a valid WireGuard public key"},
	})
	runInfraGood(t, map[string]string{
		"full": infraDoc("Node", "n1", `bgp:
  asNumber: "1.10"
  ipv4Address: 10.192.0.2/16
  ipv6Address: fe0a::2/96
  ipv4IPIPTunnelAddr: 10.65.0.1
  routeReflectorClusterID: 10.0.0.1
ipv4VXLANTunnelAddr: 10.65.0.2
vxlanTunnelMACAddr: "66:8a:9b:0c:1d:2e"
ipv6VXLANTunnelAddr: fd00::2
vxlanTunnelMACAddrV6: "66:8a:9b:0c:1d:2f"
orchRefs:
- nodeName: n1
  orchestrator: k8s
wireguard:
  interfaceIPv4Address: 10.65.0.3
addresses:
- address: 10.192.0.2/16
  type: CalicoNodeIP
- address: 10.192.0.2
  type: InternalIP
interfaces:
- name: eth0
  addresses: ["10.192.0.2/16"]`) + "status:\n  wireguardPublicKey: jlkVyQYooZYzI2wFfNhSZez5eWh44yfq1wKVjLvSXgY=\n  podCIDRs: [\"10.244.1.0/24\"]\n",
	})
}
