package nft

import (
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// Sets and elements for the netlink encoder (nlencode.go): handles on the
// table's named sets and maps, and their elements as nft sends them.

type setType struct {
	fields []selector // only kind, len and dt are used
	isMap  bool
}

var fieldTypes = map[string]selector{
	"ipv4_addr":    {kind: vIPv4, len: 4, dt: nftables.TypeIPAddr},
	"ipv6_addr":    {kind: vIPv6, len: 16, dt: nftables.TypeIP6Addr},
	"inet_proto":   {kind: vProto, len: 1, dt: nftables.TypeInetProto},
	"inet_service": {kind: vPort, len: 2, dt: nftables.TypeInetService},
	"ifname":       {kind: vIfname, len: 16, dt: nftables.TypeIFName},
}

func parseSetType(typ string, isMap bool) (setType, bool) {
	k, data, hasData := strings.Cut(typ, " : ")
	if hasData != isMap || hasData && data != "verdict" {
		return setType{}, false
	}
	t := setType{isMap: isMap}
	for _, f := range strings.Split(k, " . ") {
		s, ok := fieldTypes[f]
		if !ok {
			return setType{}, false
		}
		t.fields = append(t.fields, s)
	}
	return t, true
}

// kernelSet is a handle on an existing named set or map of the table, for element operations
// (conn.SetAddElements / conn.SetDeleteElements): shape.typ is the driver's type string,
// e.g. "ipv4_addr", "ipv6_addr", "ipv4_addr . inet_proto . inet_service",
// "ipv6_addr . inet_proto . inet_service", "inet_service . inet_proto : verdict" (interval),
// "ifname : verdict", "ifname", "inet_proto . inet_service"; shape.interval is whether it has flags interval.
func kernelSet(tbl *nftables.Table, name string, shape setShape) (*nftables.Set, error) {
	typ, interval, isMap := shape.typ, shape.interval, shape.isMap
	t, ok := parseSetType(typ, isMap)
	if !ok || !objName(name) {
		return nil, fmt.Errorf("%w: set %s type %q", errNotEncodable, name, typ)
	}
	dts := make([]nftables.SetDatatype, len(t.fields))
	for i, f := range t.fields {
		dts[i] = f.dt
	}
	kt := dts[0]
	if len(dts) > 1 {
		var err error
		if kt, err = nftables.ConcatSetType(dts...); err != nil {
			return nil, fmt.Errorf("%w: set %s type %q", errNotEncodable, name, typ)
		}
	}
	s := &nftables.Set{Table: tbl, Name: name, KeyType: kt, Interval: interval, IsMap: isMap,
		Concatenation: interval && len(dts) > 1}
	if len(t.fields) == 1 && t.fields[0].kind == vIfname {
		// nft records a string key's byte order as the host's in the
		// set's user data, and prints its elements by it.
		s.KeyByteOrder = binaryutil.NativeEndian
	}
	if isMap {
		s.DataType = nftables.TypeVerdict
	}
	return s, nil
}

// encodeElem encodes one element (elemT: key []string, value []string, as in model.go; value is a
// verdict like "goto c-abc", "jump p-xyz", "return", "drop", "accept" for verdict maps) of a set of
// type typ, into the netlink elements nft sends for it (an interval element of an ipv4_addr/ipv6_addr
// interval set is a start element and an end element with IntervalEnd, except where nft sends no end;
// concatenated interval maps use Key and KeyEnd). The same elements serve to delete it.
func encodeElem(shape setShape, e elemT) ([]nftables.SetElement, error) {
	t, ok := parseSetType(shape.typ, shape.isMap)
	if !ok {
		return nil, fmt.Errorf("%w: element %q : %q of %q", errNotEncodable, e.key, e.value, shape.typ)
	}
	return appendElem(nil, t, shape, e)
}

// appendElem is encodeElem for a set whose type is already parsed (t,
// parseSetType's of shape): it appends e's elements to dst, allocating
// nothing more for a set of one field but the key's bytes. On error dst
// is returned as it was.
func appendElem(dst []nftables.SetElement, t setType, shape setShape, e elemT) ([]nftables.SetElement, error) {
	typ, interval, isMap := shape.typ, shape.interval, shape.isMap
	fail := func() ([]nftables.SetElement, error) {
		return dst, fmt.Errorf("%w: element %q : %q of %q", errNotEncodable, e.key, e.value, typ)
	}
	if len(e.key) != len(t.fields) {
		return fail()
	}
	concat := len(t.fields) > 1
	var el nftables.SetElement
	var vals []value
	for i, f := range t.fields {
		var v value
		var ok bool
		if f.kind == vIfname {
			b, ok := ifnameBytes(e.key[i], wholeIfname)
			if !ok {
				return fail()
			}
			v = value{lo: b, hi: b, bits: -1}
		} else if v, ok = parseValue(f.kind, e.key[i]); !ok {
			return fail()
		}
		if !v.point() && (!interval || concat && f.kind != vPort || !concat && f.kind != vIPv4 && f.kind != vIPv6) {
			return fail()
		}
		vals = append(vals, v)
		if !concat {
			el.Key = v.lo
			continue
		}
		pad := make([]byte, pad4(f.len)-f.len)
		el.Key = append(append(el.Key, v.lo...), pad...)
		if interval {
			el.KeyEnd = append(append(el.KeyEnd, v.hi...), pad...)
		}
	}
	if isMap {
		if len(e.value) != 1 {
			return fail()
		}
		w := strings.Fields(e.value[0])
		if len(w) == 0 {
			return fail()
		}
		k, ok := verdictKinds[w[0]]
		chain := len(w) == 2 && (k == expr.VerdictGoto || k == expr.VerdictJump) && objName(w[1])
		if !ok || len(w) != 1 && !chain || len(w) == 1 && (k == expr.VerdictGoto || k == expr.VerdictJump) {
			return fail()
		}
		el.VerdictData = &expr.Verdict{Kind: k}
		if chain {
			el.VerdictData.Chain = w[1]
		}
	} else if len(e.value) != 0 {
		return fail()
	}
	if !interval || concat {
		return append(dst, el), nil
	}
	if isMap {
		return fail() // interval maps of one field: not used, not checked
	}
	end := successor(vals[0].hi)
	if end == nil {
		// An interval up to the last address has no end element; nft marks
		// it "open" in the element's user data, which google/nftables
		// cannot send. nft writes those (0.0.0.0/0, 255.255.255.255).
		return fail()
	}
	return append(dst, el, nftables.SetElement{Key: end, IntervalEnd: true}), nil
}
