package nft

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
)

// ProtoPort is a failsafe port: traffic to (inbound) or from the host to
// (outbound) this protocol and destination port is always allowed through
// host endpoint policy, so that a bad policy cannot lock an operator out.
type ProtoPort struct {
	Protocol uint8 // calc.ProtoTCP, calc.ProtoUDP or calc.ProtoSCTP
	Port     uint16
}

// Pool is an IP pool as far as the dataplane cares: its CIDR, and whether
// traffic from it to outside every pool is masqueraded.
type Pool struct {
	CIDR        netip.Prefix
	NATOutgoing bool
}

// EndpointToHost is what happens to traffic from a workload to the host
// itself once the workload's egress policy allowed it (Calico's
// DefaultEndpointToHostAction).
type EndpointToHost string

const (
	// EndpointToHostDrop drops it (Calico's default).
	EndpointToHostDrop EndpointToHost = "Drop"
	// EndpointToHostAccept accepts it.
	EndpointToHostAccept EndpointToHost = "Accept"
	// EndpointToHostReturn lets the input chain go on to the failsafe
	// ports and host endpoint policy.
	EndpointToHostReturn EndpointToHost = "Return"
)

// DefaultFlowLogGroup is the NFLOG group tortie-node's flow logs use.
const DefaultFlowLogGroup = 30

// Config is the static part of what the driver programs.
type Config struct {
	// TableName is the inet table the driver owns entirely.
	TableName string
	// InterfacePrefixes are the prefixes of workload interfaces; a packet
	// on an interface with one of them that is not a known workload is
	// dropped.
	InterfacePrefixes []string
	// FailsafeInbound and FailsafeOutbound are always allowed through host
	// endpoint policy.
	FailsafeInbound  []ProtoPort
	FailsafeOutbound []ProtoPort
	// Pools are the IP pools (also settable later with SetPools).
	Pools []Pool
	// LogGroup is the NFLOG group Log rules send to.
	LogGroup int
	// FlowLogGroup, when not 0, turns flow logs on: in workload and host
	// endpoint programs, every rule that decides (an Allow or Deny rule, a
	// tier's default Deny, a missing profile, the final Deny) first sends
	// the packet, cut to FlowLogSnaplen bytes, to this NFLOG group with a
	// prefix that names it (flowlog.RuleID and the others). Only the first
	// packet of a connection meets policy, so that is one message per
	// connection and side. Classes whose verdict is a constant then get a
	// chain too (a map element cannot log).
	FlowLogGroup int
	// FlowMarks, with FlowLogGroup set, makes a workload's egress Allow
	// write its rule's number into a field of the packet mark instead of
	// logging: the server's ingress rule then logs both decisions of a
	// connection between two local workloads in one message, and a rule
	// after the egress programs logs the packets that go elsewhere
	// (flowlog.Marks). nil: every decision logs on its own.
	FlowMarks *flowlog.Marks
	// FlowLogSnaplen is how much of a logged packet is copied (default
	// 64: the IP header and the ports or ICMP type behind it, unless
	// IPv6 extension headers push them further).
	FlowLogSnaplen int
	// EndpointToHost is the action after workload egress policy allowed a
	// packet to the host.
	EndpointToHost EndpointToHost
	// NATOutgoingAddress, when valid (IPv4), is the source address
	// natOutgoing traffic is rewritten to; otherwise it is masqueraded to
	// the outgoing interface's address.
	NATOutgoingAddress netip.Addr
	// UntrackedMark is the packet mark bit with which an untracked
	// (doNotTrack) policy tells the filter chains that it allowed a packet.
	UntrackedMark uint32
}

// DefaultFailsafeInbound and DefaultFailsafeOutbound are Calico's.
var (
	DefaultFailsafeInbound = []ProtoPort{
		{calc.ProtoTCP, 22}, {calc.ProtoUDP, 68}, {calc.ProtoTCP, 179}, {calc.ProtoTCP, 2379},
		{calc.ProtoTCP, 2380}, {calc.ProtoTCP, 5473}, {calc.ProtoTCP, 6443}, {calc.ProtoTCP, 6666},
		{calc.ProtoTCP, 6667},
	}
	DefaultFailsafeOutbound = []ProtoPort{
		{calc.ProtoUDP, 53}, {calc.ProtoUDP, 67}, {calc.ProtoTCP, 179}, {calc.ProtoTCP, 2379},
		{calc.ProtoTCP, 2380}, {calc.ProtoTCP, 5473}, {calc.ProtoTCP, 6443}, {calc.ProtoTCP, 6666},
		{calc.ProtoTCP, 6667},
	}
)

// Defaults fills in what is unset: table "tortie", prefix "cali", Calico's
// failsafe ports, NFLOG group 1, endpoint-to-host Drop, mark 0x100000.
func (c Config) Defaults() Config {
	if c.TableName == "" {
		c.TableName = "tortie"
	}
	if len(c.InterfacePrefixes) == 0 {
		c.InterfacePrefixes = []string{"cali"}
	}
	if c.FailsafeInbound == nil {
		c.FailsafeInbound = slices.Clone(DefaultFailsafeInbound)
	}
	if c.FailsafeOutbound == nil {
		c.FailsafeOutbound = slices.Clone(DefaultFailsafeOutbound)
	}
	if c.FlowLogGroup != 0 && c.FlowLogSnaplen == 0 {
		c.FlowLogSnaplen = 64
	}
	if c.LogGroup == 0 {
		c.LogGroup = 1
	}
	if c.EndpointToHost == "" {
		c.EndpointToHost = EndpointToHostDrop
	}
	if c.UntrackedMark == 0 {
		c.UntrackedMark = 0x100000
	}
	return c
}

// Validate reports a configuration the driver cannot program.
func (c Config) Validate() error {
	if c.TableName == "" {
		return fmt.Errorf("TableName is empty")
	}
	for _, p := range c.InterfacePrefixes {
		if p == "" {
			return fmt.Errorf("empty interface prefix")
		}
	}
	for _, pp := range append(slices.Clone(c.FailsafeInbound), c.FailsafeOutbound...) {
		if !calc.HasPorts(pp.Protocol) {
			return fmt.Errorf("failsafe port %d/%d: protocol has no ports", pp.Protocol, pp.Port)
		}
	}
	switch c.EndpointToHost {
	case EndpointToHostDrop, EndpointToHostAccept, EndpointToHostReturn:
	default:
		return fmt.Errorf("EndpointToHost %q: want Drop, Accept or Return", c.EndpointToHost)
	}
	if c.UntrackedMark == 0 || c.UntrackedMark&(c.UntrackedMark-1) != 0 {
		return fmt.Errorf("UntrackedMark %#x: want one bit", c.UntrackedMark)
	}
	if a := c.NATOutgoingAddress; a.IsValid() && !a.Is4() {
		return fmt.Errorf("NATOutgoingAddress %s: want an IPv4 address", a)
	}
	if c.LogGroup < 0 || c.LogGroup > 65535 {
		return fmt.Errorf("LogGroup %d out of range", c.LogGroup)
	}
	if c.FlowLogGroup < 0 || c.FlowLogGroup > 65535 {
		return fmt.Errorf("FlowLogGroup %d out of range", c.FlowLogGroup)
	}
	if c.FlowLogGroup != 0 && c.FlowLogGroup == c.LogGroup {
		return fmt.Errorf("FlowLogGroup %d is LogGroup too: give flow logs their own NFLOG group", c.FlowLogGroup)
	}
	if c.FlowLogSnaplen < 0 || c.FlowLogSnaplen > 65535 {
		return fmt.Errorf("FlowLogSnaplen %d out of range", c.FlowLogSnaplen)
	}
	if c.FlowMarks != nil && c.FlowMarks.Mask()&c.UntrackedMark != 0 {
		return fmt.Errorf("flow mark field %#x overlaps UntrackedMark %#x", c.FlowMarks.Mask(), c.UntrackedMark)
	}
	return nil
}

// flowMarked says whether workload egress decisions go into the mark.
func (c *Config) flowMarked() bool { return c.FlowLogGroup != 0 && c.FlowMarks != nil }
