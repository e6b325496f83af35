package nft

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tortie/tortie/pkg/calc"
)

// Admissions for the partition tests: a protocol with port ranges (pairs
// of first and last), a protocol on every port, any protocol.
func admPorts(proto uint8, firstLast ...uint16) admission {
	return admission{proto: proto, ranges: mergeRanges(ports(firstLast...))}
}
func admProto(proto uint8) admission { return admission{proto: proto} }
func admAny() admission              { return admission{all: true} }

const tcp, udp = calc.ProtoTCP, calc.ProtoUDP

// TestPartition: the sweep-line partition of the (protocol, port) space.
// want lists the spans as "protocol first-last [members]", then the
// default class as "default [members]".
func TestPartition(t *testing.T) {
	for _, c := range []struct {
		name string
		adms []admission
		want []string
	}{
		{name: "no rules", want: []string{"default []"}},
		{name: "no port-specific rules", adms: []admission{admAny(), admProto(tcp), admProto(47)},
			want: []string{"default [0 1 2]"}},
		{name: "single port", adms: []admission{admPorts(tcp, 80, 80)},
			want: []string{"tcp 0-79 []", "tcp 80-80 [0]", "tcp 81-65535 []", "default []"}},
		{name: "single ports, one rule", adms: []admission{admPorts(tcp, 22, 22, 80, 80)},
			want: []string{"tcp 0-21 []", "tcp 22-22 [0]", "tcp 23-79 []", "tcp 80-80 [0]", "tcp 81-65535 []", "default []"}},
		{name: "overlapping", adms: []admission{admPorts(tcp, 80, 90), admPorts(tcp, 85, 100)},
			want: []string{"tcp 0-79 []", "tcp 80-84 [0]", "tcp 85-90 [0 1]", "tcp 91-100 [1]", "tcp 101-65535 []", "default []"}},
		{name: "identical", adms: []admission{admPorts(tcp, 80, 90), admPorts(tcp, 80, 90), admPorts(tcp, 80, 90)},
			want: []string{"tcp 0-79 []", "tcp 80-90 [0 1 2]", "tcp 91-65535 []", "default []"}},
		{name: "nested", adms: []admission{admPorts(tcp, 1000, 2000), admPorts(tcp, 1200, 1300), admPorts(tcp, 1250, 1250)},
			want: []string{"tcp 0-999 []", "tcp 1000-1199 [0]", "tcp 1200-1249 [0 1]", "tcp 1250-1250 [0 1 2]",
				"tcp 1251-1300 [0 1]", "tcp 1301-2000 [0]", "tcp 2001-65535 []", "default []"}},
		// Adjacent ranges of different rules are different classes; of
		// one rule, mergeRanges made them one range.
		{name: "adjacent", adms: []admission{admPorts(tcp, 80, 89), admPorts(tcp, 90, 99), admPorts(tcp, 100, 109, 110, 119)},
			want: []string{"tcp 0-79 []", "tcp 80-89 [0]", "tcp 90-99 [1]", "tcp 100-119 [2]", "tcp 120-65535 []", "default []"}},
		{name: "adjacent ranges of one rule, not merged", adms: []admission{{proto: tcp, ranges: ports(80, 89, 90, 99)}},
			want: []string{"tcp 0-79 []", "tcp 80-99 [0]", "tcp 100-65535 []", "default []"}},
		{name: "edges of the port space", adms: []admission{admPorts(udp, 0, 0), admPorts(udp, 65535, 65535)},
			want: []string{"udp 0-0 [0]", "udp 1-65534 []", "udp 65535-65535 [1]", "default []"}},
		{name: "every port", adms: []admission{admPorts(udp, 0, 65535)},
			want: []string{"udp 0-65535 [0]", "default []"}},
		// Rules of every port of a protocol with port rules, and of any
		// protocol, are in all its classes; the default class holds those
		// of any protocol and of protocols without port rules.
		{name: "mixed", adms: []admission{admAny(), admPorts(tcp, 80, 80), admProto(tcp), admProto(udp), admPorts(tcp, 443, 443), admProto(47)},
			want: []string{"tcp 0-79 [0 2]", "tcp 80-80 [0 1 2]", "tcp 81-442 [0 2]", "tcp 443-443 [0 2 4]", "tcp 444-65535 [0 2]",
				"default [0 3 5]"}},
		{name: "protocols in order", adms: []admission{admPorts(udp, 53, 53), admPorts(tcp, 53, 53)},
			want: []string{"tcp 0-52 []", "tcp 53-53 [1]", "tcp 54-65535 []", "udp 0-52 []", "udp 53-53 [0]", "udp 54-65535 []", "default []"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			classes, spans := partition(c.adms)
			checkPartition(t, c.adms, classes, spans)
			var got []string
			for _, s := range spans {
				got = append(got, fmt.Sprintf("%s %d-%d %v", protoName(s.proto), s.first, s.last, classes[s.class].members))
			}
			got = append(got, fmt.Sprintf("default %v", classes[0].members))
			if !slices.Equal(got, c.want) {
				t.Errorf("partition:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

// TestPartitionManyRules: 300 rules of single ports, ranges and whole
// protocols, overlapping in every way, partition correctly (checked port
// by port), and ports with the same rules share one class.
func TestPartitionManyRules(t *testing.T) {
	var adms []admission
	for i := range 300 {
		p := uint16(i * 37 % 2000)
		switch i % 6 {
		case 0, 1:
			adms = append(adms, admPorts(tcp, p, p))
		case 2:
			adms = append(adms, admPorts(tcp, p, p+uint16(i%50)))
		case 3:
			adms = append(adms, admPorts(udp, p, p+100, p+300, p+310))
		case 4:
			adms = append(adms, admProto(tcp))
		default:
			adms = append(adms, admAny())
		}
	}
	classes, spans := partition(adms)
	checkPartition(t, adms, classes, spans)
	if len(classes) < 300 {
		t.Errorf("%d classes for 300 overlapping rules: too few", len(classes))
	}
}

// checkPartition checks what a partition must be whatever the rules: the
// spans of each protocol with port rules cover 0–65535 in order;
// neighbouring spans are of different classes; a class starts at its first
// span; classes are distinct; and, port by port, a class's members are
// exactly the rules that admit its packets (the default class: the rules
// that admit a packet of a protocol without port rules).
func checkPartition(t *testing.T, adms []admission, classes []portClass, spans []span) {
	t.Helper()
	if len(classes) == 0 || classes[0].proto != 0 {
		t.Fatalf("no default class: %v", classes)
	}
	seen := map[string]int{}
	for ci, c := range classes {
		k := fmt.Sprint(c.proto, c.members)
		if prev, ok := seen[k]; ok {
			t.Errorf("classes %d and %d are the same: %s", prev, ci, k)
		}
		seen[k] = ci
		if !slices.IsSorted(c.members) {
			t.Errorf("class %d: members %v not ascending", ci, c.members)
		}
	}
	var protos []uint8
	for _, a := range adms {
		if a.ranges != nil && !slices.Contains(protos, a.proto) {
			protos = append(protos, a.proto)
		}
	}
	slices.Sort(protos)
	firstSpan := map[int]bool{}
	i := 0
	for _, p := range protos {
		next := 0
		for ; i < len(spans) && spans[i].proto == p; i++ {
			s := spans[i]
			if s.first != next || s.last < s.first {
				t.Fatalf("%s: span %d-%d after port %d", protoName(p), s.first, s.last, next-1)
			}
			if i > 0 && spans[i-1].proto == p && spans[i-1].class == s.class {
				t.Errorf("%s: spans ending at %d and starting at %d are of one class, not merged", protoName(p), spans[i-1].last, s.first)
			}
			c := classes[s.class]
			if c.proto != p {
				t.Fatalf("%s: span %d-%d of class %d of protocol %d", protoName(p), s.first, s.last, s.class, c.proto)
			}
			if !firstSpan[s.class] {
				firstSpan[s.class] = true
				if c.first != s.first {
					t.Errorf("class %d starts at %d, its first span at %d", s.class, c.first, s.first)
				}
			}
			for port := s.first; port <= s.last; port++ {
				if want := admitting(adms, p, port); !slices.Equal(c.members, want) {
					t.Fatalf("%s port %d: class members %v, want %v", protoName(p), port, c.members, want)
				}
			}
			next = s.last + 1
		}
		if next != 65536 {
			t.Errorf("%s: spans end at %d", protoName(p), next-1)
		}
	}
	if i != len(spans) {
		t.Errorf("spans of protocols without port rules, or out of order: %v", spans[i:])
	}
	var def []int
	for ri, a := range adms {
		if a.all || !slices.Contains(protos, a.proto) {
			def = append(def, ri)
		}
	}
	if !slices.Equal(classes[0].members, def) {
		t.Errorf("default class %v, want %v", classes[0].members, def)
	}
}

// admitting are the rules that admit a packet of protocol p to port.
func admitting(adms []admission, p uint8, port int) []int {
	var out []int
	for i, a := range adms {
		switch {
		case a.all, a.proto == p && a.ranges == nil:
			out = append(out, i)
		case a.proto == p && slices.ContainsFunc(a.ranges, func(r calc.PortRange) bool { return int(r.First) <= port && port <= int(r.Last) }):
			out = append(out, i)
		}
	}
	return out
}
