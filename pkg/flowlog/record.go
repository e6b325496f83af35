package flowlog

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/trace"
)

// Packet is what a logged packet's headers say.
type Packet struct {
	Src, Dst         netip.Addr
	Protocol         uint8
	SrcPort, DstPort uint16
	ICMPType         uint8
	ICMPCode         uint8
}

// ParsePacket reads the IPv4 or IPv6 header at the start of b (what NFLOG
// copies, from the network header on) and the ports or ICMP type and code
// behind it. IPv6 extension headers are skipped.
func ParsePacket(b []byte) (Packet, error) {
	var p Packet
	if len(b) < 1 {
		return p, fmt.Errorf("empty packet")
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return p, fmt.Errorf("IPv4 header cut short (%d bytes)", len(b))
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return p, fmt.Errorf("IPv4 header length %d", ihl)
		}
		p.Protocol = b[9]
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		if off := binary.BigEndian.Uint16(b[6:8]) & 0x1fff; off != 0 {
			return p, nil // a later fragment: no transport header
		}
		l4 = b[ihl:]
	case 6:
		if len(b) < 40 {
			return p, fmt.Errorf("IPv6 header cut short (%d bytes)", len(b))
		}
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		next, rest := b[6], b[40:]
		for range 8 {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(rest) < 8 {
					return p, fmt.Errorf("IPv6 extension header cut short")
				}
				n := (int(rest[1]) + 1) * 8
				if len(rest) < n {
					return p, fmt.Errorf("IPv6 extension header cut short")
				}
				next, rest = rest[0], rest[n:]
				continue
			case 44: // fragment
				if len(rest) < 8 {
					return p, fmt.Errorf("IPv6 fragment header cut short")
				}
				if binary.BigEndian.Uint16(rest[2:4])&0xfff8 != 0 {
					p.Protocol = rest[0]
					return p, nil
				}
				next, rest = rest[0], rest[8:]
				continue
			}
			break
		}
		p.Protocol, l4 = next, rest
	default:
		return p, fmt.Errorf("not an IP packet (version %d)", b[0]>>4)
	}
	switch {
	case calc.HasPorts(p.Protocol):
		if len(l4) >= 4 {
			p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		}
	case p.Protocol == calc.ProtoICMP || p.Protocol == calc.ProtoICMPv6:
		if len(l4) >= 2 {
			p.ICMPType, p.ICMPCode = l4[0], l4[1]
		}
	}
	return p, nil
}

// Endpoint is one end of a flow: its address and port, and what it is
// when the agent knows (a workload or host endpoint, a network set).
type Endpoint struct {
	Addr netip.Addr `json:"addr"`
	Port uint16     `json:"port,omitempty"`
	// Kind is "WorkloadEndpoint", "HostEndpoint", "NetworkSet",
	// "GlobalNetworkSet", or "" for an address the agent knows nothing of.
	Kind      string            `json:"kind,omitempty"`
	Namespace string            `json:"namespace,omitempty"`
	Name      string            `json:"name,omitempty"`
	Workload  string            `json:"workload,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// String is "ns/name" for a namespaced endpoint, the name, or the address.
func (e Endpoint) String() string {
	switch {
	case e.Namespace != "" && e.Workload != "":
		return e.Namespace + "/" + e.Workload
	case e.Namespace != "":
		return e.Namespace + "/" + e.Name
	case e.Name != "":
		return e.Name
	}
	return e.Addr.String()
}

// Record is a flow: connections from Src to Dst that one side's policy
// decided the same way, within an interval.
type Record struct {
	// Start and End bound the first packets the record counts.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Node  string    `json:"node,omitempty"`
	// Direction is the side whose policy decided: Egress of Src or
	// Ingress of Dst.
	Direction calc.Direction `json:"direction"`
	Src       Endpoint       `json:"src"`
	Dst       Endpoint       `json:"dst"`
	Protocol  string         `json:"protocol"`
	ICMPType  *uint8         `json:"icmpType,omitempty"`
	ICMPCode  *uint8         `json:"icmpCode,omitempty"`
	Action    calc.Action    `json:"action"`
	// Decision names the tier, policy and rule (or the tier's end, the
	// profile, the final deny) that decided.
	Decision trace.Decision `json:"decision"`
	// Connections is how many connections (first packets) the record
	// folds together; every connection is in exactly one record.
	Connections int `json:"connections"`
	// Staged is what the same side's policy would have done with every
	// staged policy in force, when any staged policy changes something.
	Staged *StagedVerdict `json:"staged,omitempty"`
	// Packets and bytes of connections of this flow that ended in the
	// record's interval (conntrack accounting, counted when a connection
	// ends), from Src to Dst (Out) and back (In). A record may carry only
	// these (Connections 0): connections counted in an earlier record that
	// ended now. Every packet is in exactly one record.
	PacketsOut uint64 `json:"packetsOut,omitempty"`
	BytesOut   uint64 `json:"bytesOut,omitempty"`
	PacketsIn  uint64 `json:"packetsIn,omitempty"`
	BytesIn    uint64 `json:"bytesIn,omitempty"`
}

// StagedVerdict is a staged policy set's would-be verdict.
type StagedVerdict struct {
	Action   calc.Action    `json:"action"`
	Decision trace.Decision `json:"decision"`
}

// Policy is the record's deciding policy or profile, for filters and
// counters: "tier/policy", "profile/name", or "tier/(end of tier)".
func (r *Record) Policy() string {
	d := r.Decision
	switch d.Kind {
	case "rule", "tier default":
		return d.Tier + "/" + d.Policy
	case "profile rule", "missing profile":
		return "profile/" + d.Profile
	}
	return ""
}

// Key is what records are aggregated by within an interval: everything
// but the source port (each connection has its own) and the counts. ID
// is the deciding rule's identifier, which stands for direction, action
// and decision.
type Key struct {
	ID       string
	Src, Dst netip.Addr
	Protocol uint8
	DstPort  uint16
	ICMP     [2]uint8
}

// Aggregator folds logged first packets into records. A key's first
// packet in an interval is a record at once (so a follower sees a new
// flow within a second), the rest of the interval's packets of that key
// one record when the interval ends (Flush). It holds at most MaxKeys keys
// per interval; packets of new keys beyond that are counted in Overflow
// and their connections in no record.
type Aggregator struct {
	MaxKeys  int
	cur      map[Key]*pending
	Overflow uint64
	// conns are the live connections seen, to the flows of their sides,
	// for their totals when they end; templates are those flows' records
	// (what a totals-only record of a later interval starts from).
	conns     map[ConnTuple][]Key
	templates map[Key]*template
	// MaxConns bounds conns; connections beyond it get no totals
	// (counted in Untracked).
	MaxConns  int
	Untracked uint64
	// Totals: remember connections for Ended (off, nothing is kept).
	Totals bool
}

type pending struct {
	rec   Record
	count int
	// totals: packets or bytes were added (Flush emits the record even
	// with no connection to count).
	totals bool
}

type template struct {
	rec  Record
	refs int
}

// ConnTuple is a connection as its first packet shows it.
type ConnTuple struct {
	Src, Dst         netip.Addr
	Protocol         uint8
	SrcPort, DstPort uint16
}

// NewAggregator returns an aggregator of at most maxKeys keys per interval.
func NewAggregator(maxKeys int) *Aggregator {
	return &Aggregator{MaxKeys: maxKeys, cur: map[Key]*pending{}, conns: map[ConnTuple][]Key{},
		templates: map[Key]*template{}, MaxConns: 4 * max(maxKeys, 1)}
}

// track remembers a connection's flow for its totals.
func (a *Aggregator) track(p Packet, k Key, rec *Record) {
	if !a.Totals {
		return
	}
	ct := ConnTuple{p.Src, p.Dst, p.Protocol, p.SrcPort, p.DstPort}
	if _, ok := a.conns[ct]; !ok && len(a.conns) >= a.MaxConns {
		a.Untracked++
		return
	}
	a.conns[ct] = append(a.conns[ct], k)
	if t := a.templates[k]; t != nil {
		t.refs++
		return
	}
	a.templates[k] = &template{rec: *rec, refs: 1}
}

// Ended adds a connection's totals to the flows of its sides, in this
// interval; false when the connection was not seen (or not tracked).
func (a *Aggregator) Ended(ct ConnTuple, packetsOut, bytesOut, packetsIn, bytesIn uint64) bool {
	keys, ok := a.conns[ct]
	if !ok {
		return false
	}
	delete(a.conns, ct)
	for _, k := range keys {
		t := a.templates[k]
		if t == nil {
			continue
		}
		pd := a.cur[k]
		if pd == nil {
			if a.MaxKeys > 0 && len(a.cur) >= a.MaxKeys {
				a.Overflow++
			} else {
				r := t.rec
				r.Connections, r.Staged = 0, t.rec.Staged
				r.PacketsOut, r.BytesOut, r.PacketsIn, r.BytesIn = 0, 0, 0, 0
				pd = &pending{rec: r}
				a.cur[k] = pd
			}
		}
		if pd != nil {
			pd.rec.PacketsOut += packetsOut
			pd.rec.BytesOut += bytesOut
			pd.rec.PacketsIn += packetsIn
			pd.rec.BytesIn += bytesIn
			pd.totals = true
		}
		if t.refs--; t.refs <= 0 {
			delete(a.templates, k)
		}
	}
	return true
}

// Add counts one first packet, decided by the rule of identifier id
// (which stands for ref), at now; describe names its ends. It returns the
// record to publish now (the key's first packet in this interval), if
// any. enrich, if not nil, completes a new record before it is kept.
func (a *Aggregator) Add(p Packet, id string, ref Ref, now time.Time, describe func(netip.Addr) Endpoint, enrich func(*Record)) *Record {
	k := Key{ID: id, Src: p.Src, Dst: p.Dst, Protocol: p.Protocol, DstPort: p.DstPort}
	if p.Protocol == calc.ProtoICMP || p.Protocol == calc.ProtoICMPv6 {
		k.ICMP = [2]uint8{p.ICMPType, p.ICMPCode}
	}
	if pd, ok := a.cur[k]; ok {
		if pd.count == 0 {
			pd.rec.Start = now
		}
		pd.count++
		pd.rec.End = now
		a.track(p, k, &pd.rec)
		return nil
	}
	if a.MaxKeys > 0 && len(a.cur) >= a.MaxKeys {
		a.Overflow++
		return nil
	}
	rec := Record{Start: now, End: now, Direction: ref.Direction, Protocol: trace.ProtocolName(p.Protocol),
		Action: ref.Action, Decision: ref.Decision, Connections: 1}
	rec.Src, rec.Dst = describe(p.Src), describe(p.Dst)
	if calc.HasPorts(p.Protocol) {
		rec.Src.Port, rec.Dst.Port = p.SrcPort, p.DstPort
	}
	if p.Protocol == calc.ProtoICMP || p.Protocol == calc.ProtoICMPv6 {
		t, c := p.ICMPType, p.ICMPCode
		rec.ICMPType, rec.ICMPCode = &t, &c
	}
	if enrich != nil {
		enrich(&rec)
	}
	a.cur[k] = &pending{rec: rec}
	a.track(p, k, &rec)
	return &rec
}

// Flush ends the interval: a record for every key that had more first
// packets after its first, in a stable order, and an empty interval.
func (a *Aggregator) Flush() []Record {
	var out []Record
	for _, pd := range a.cur {
		if pd.count > 0 || pd.totals {
			r := pd.rec
			r.Connections = pd.count
			out = append(out, r)
		}
	}
	clear(a.cur)
	sortRecords(out)
	return out
}

// Len is how many keys the current interval has.
func (a *Aggregator) Len() int { return len(a.cur) }
