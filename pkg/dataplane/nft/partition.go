package nft

import (
	"slices"
	"strconv"
)

// The class partition of a program (see program.go): the (protocol,
// destination port) space cut by every rule's admission into classes, each
// the rules that can match its packets.

// portClass is one class of the partition.
type portClass struct {
	// proto is the class's protocol; 0 for the default class, which holds
	// the rules that do not depend on the destination port: those of any
	// protocol and those of protocols without port-specific rules.
	proto uint8
	// members are the rules (indices into the admissions partitioned)
	// that can match a packet of the class, ascending.
	members []int
	// first is the first port of the class's first span.
	first int
	// partial, when not nil, says which members match only some of the
	// class's ports (a class kept from an earlier partition, see stick):
	// their chain lines keep their port conditions.
	partial []bool
}

// span is a run of ports of one protocol whose packets are all of one
// class.
type span struct {
	proto       uint8
	first, last int
	class       int // index into the classes
}

// partition cuts the (protocol, destination port) space by adms, the
// admissions of a program's rules in evaluation order. classes[0] is the
// default class; every protocol with a port-specific rule gets the classes
// of its ports, found by a sweep over the rules' range boundaries (a class
// is a set of active rules: ports of the protocol with the same active
// rules, adjacent or not, are one class). spans cover each such protocol's
// ports 0–65535 in order, neighbours of the same class merged.
func partition(adms []admission) (classes []portClass, spans []span) {
	// Protocols with port-specific rules get classes; sorted.
	var protos []uint8
	for _, a := range adms {
		if a.ranges != nil && !slices.Contains(protos, a.proto) {
			protos = append(protos, a.proto)
		}
	}
	slices.Sort(protos)

	classes = []portClass{{}}
	for i, a := range adms {
		if a.all || !slices.Contains(protos, a.proto) {
			classes[0].members = append(classes[0].members, i)
		}
	}
	byKey := map[classSig]int{}
	for _, p := range protos {
		sweep(adms, p, func(run portRun) {
			key := classSig{p, run.activeKey}
			ci, ok := byKey[key]
			if !ok {
				ci = len(classes)
				classes = append(classes, portClass{proto: p, members: run.members(), first: run.first})
				byKey[key] = ci
			}
			if n := len(spans); n > 0 && spans[n-1].proto == p && spans[n-1].class == ci {
				spans[n-1].last = run.last
			} else {
				spans = append(spans, span{p, run.first, run.last, ci})
			}
		})
	}
	return classes, spans
}

// classSig identifies a class: its protocol and its active range rules.
type classSig struct {
	proto  uint8
	active string
}

// portRun is a run of ports of one protocol between two range boundaries:
// the same rules are active on all of it.
type portRun struct {
	first, last int
	// activeKey says which range rules are active; members lists those and
	// the rules of every port of the protocol, ascending (made on demand:
	// most runs are of a class already seen).
	activeKey string
	members   func() []int
}

// sweep walks protocol p's ports from 0 to 65535 over the boundaries of
// its rules' ranges and calls yield with each run between boundaries, in
// order.
func sweep(adms []admission, p uint8, yield func(portRun)) {
	var always []int // in every class of p
	// An event is a rule's range starting or ending at a port: packed as
	// port<<32 | rule<<1 | ends, so a plain sort orders them by port.
	var events []uint64
	for i, a := range adms {
		switch {
		case a.all || (a.proto == p && a.ranges == nil):
			always = append(always, i)
		case a.proto == p:
			for _, rg := range a.ranges {
				events = append(events, uint64(rg.First)<<32|uint64(i)<<1, (uint64(rg.Last)+1)<<32|uint64(i)<<1|1)
			}
		}
	}
	slices.Sort(events)
	at := func(e uint64) int { return int(e >> 32) }
	var active []int // ascending
	members := func() []int {
		m := append(slices.Clone(always), active...)
		slices.Sort(m)
		return m
	}
	var kb []byte
	pos := 0
	for start := 0; start <= 65535; {
		for pos < len(events) && at(events[pos]) == start {
			e := events[pos]
			idx := int(uint32(e) >> 1)
			if e&1 == 0 {
				i, _ := slices.BinarySearch(active, idx)
				active = slices.Insert(active, i, idx)
			} else if i, ok := slices.BinarySearch(active, idx); ok {
				active = slices.Delete(active, i, i+1)
			}
			pos++
		}
		end := 65535
		if pos < len(events) {
			end = at(events[pos]) - 1
		}
		kb = kb[:0]
		for _, a := range active {
			kb = strconv.AppendInt(kb, int64(a), 36)
			kb = append(kb, ',')
		}
		yield(portRun{first: start, last: end, activeKey: string(kb), members: members})
		start = end + 1
	}
}
