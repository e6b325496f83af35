package lab

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/netip"
)

// Every object's name, in one place. Names inside the lab's own namespaces
// (eth0, br0, p-h1) need not be unique on the machine; names in the root
// namespace and namespace names carry the lab name.

// Topologies and encapsulations.
const (
	TopologyMesh = "mesh"
	TopologyToR  = "tor"
	TopologyRR   = "rr"

	EncapNone        = "none"
	EncapVXLAN       = "vxlan"
	EncapCrossSubnet = "vxlan-crosssubnet"

	EncryptionNone      = "none"
	EncryptionWireguard = "wireguard"
)

const (
	// DefaultName is the lab's name when none is given.
	DefaultName = "tortie"
	// DefaultPool and DefaultPool6 are the workloads' IP pools.
	DefaultPool  = "10.244.0.0/16"
	DefaultPool6 = "fd00:10:244::/56"
	// DefaultAS is every node's AS number (and BIRD's in the tor topology,
	// where it reflects routes between the hosts).
	DefaultAS = 64512
	// HealthPort and MetricsPort of every agent, in its host namespace.
	HealthPort  = 9099
	MetricsPort = 9091
	// NetworkName is the CNI network (and IPAM handle prefix).
	NetworkName = "k8s-pod-network"

	routerHost = 253 // the router's address in each subnet
	rootHost   = 254 // the root namespace's address (the datastore)

	bridgePrefix = "br" // br0, br1 in the fabric namespace
)

func fabricNetns(lab string) string      { return lab + "-fab" }
func routerNetns(lab string) string      { return lab + "-rt" }
func hostName(i int) string              { return fmt.Sprintf("h%d", i) }
func hostNetns(lab string, i int) string { return lab + "-" + hostName(i) }

// workloadNetns: a Kubernetes namespace name has no '.', so this is unique.
func workloadNetns(lab, ns, name string) string { return lab + "-w-" + ns + "." + name }

// rootLinkName is the lab's interface in the root namespace (15 characters
// at most, as the kernel wants).
func rootLinkName(lab string) string {
	if len(lab) <= 12 {
		return lab + "-ds"
	}
	sum := sha1.Sum([]byte(lab))
	return "tl" + hex.EncodeToString(sum[:])[:8] + "-ds"
}

// subnetAddr is host i of underlay subnet s: 198.(18+s).R.i.
func subnetAddr(octet, s, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, byte(18 + s), byte(octet), byte(i)})
}

// subnetAddr6 is host i of the IPv6 underlay subnet s: fd74:6c:S:R::i/64.
func subnetAddr6(octet, s, i int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd74:6c:%x:%x::%x", s, octet, i))
}

func cniContainerID(lab, ns, name string) string { return "lab-" + lab + "-" + ns + "-" + name }
