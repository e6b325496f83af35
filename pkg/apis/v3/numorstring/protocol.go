package numorstring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// NumOrStringType says which of a union's two forms is in use.
type NumOrStringType int

const (
	// NumOrStringNum marks the numeric form.
	NumOrStringNum NumOrStringType = iota
	// NumOrStringString marks the string form.
	NumOrStringString
)

// Protocol names Calico accepts in rules and endpoint ports (matched
// case-insensitively).
const (
	ProtocolTCP     = "TCP"
	ProtocolUDP     = "UDP"
	ProtocolICMP    = "ICMP"
	ProtocolICMPv6  = "ICMPv6"
	ProtocolSCTP    = "SCTP"
	ProtocolUDPLite = "UDPLite"
)

// protocolNumbers maps the lower-cased protocol names to IANA numbers.
var protocolNumbers = map[string]uint8{
	"tcp":     6,
	"udp":     17,
	"icmp":    1,
	"icmpv6":  58,
	"sctp":    132,
	"udplite": 136,
}

// Protocol is an IP protocol given either by name ("TCP", "UDP", "ICMP",
// "ICMPv6", "SCTP", "UDPLite") or by number (1–255). It keeps the form it was
// written in: a name marshals back as the same string, a number as a JSON
// number. As in Calico, a string holding only digits ("6") is read as the
// number.
type Protocol struct {
	Type   NumOrStringType
	NumVal uint8
	StrVal string
}

// ProtocolFromInt returns the numeric form.
func ProtocolFromInt(p uint8) Protocol { return Protocol{Type: NumOrStringNum, NumVal: p} }

// ProtocolFromString returns the named form (a string of digits becomes the
// numeric form, as when decoding).
func ProtocolFromString(s string) Protocol {
	if n, err := strconv.ParseUint(s, 10, 8); err == nil {
		return ProtocolFromInt(uint8(n))
	}
	return Protocol{Type: NumOrStringString, StrVal: s}
}

// ProtocolFromStringP is ProtocolFromString returning a pointer, for the
// optional protocol fields of a rule.
func ProtocolFromStringP(s string) *Protocol {
	p := ProtocolFromString(s)
	return &p
}

// ProtocolFromIntP is ProtocolFromInt returning a pointer.
func ProtocolFromIntP(n uint8) *Protocol {
	p := ProtocolFromInt(n)
	return &p
}

// String is the name as written, or the number in decimal.
func (p Protocol) String() string {
	if p.Type == NumOrStringString {
		return p.StrVal
	}
	return strconv.Itoa(int(p.NumVal))
}

// NumValue returns the IANA protocol number: the number itself, or the
// number of a known name (case-insensitively). An unknown name is an error.
func (p Protocol) NumValue() (uint8, error) {
	if p.Type == NumOrStringNum {
		return p.NumVal, nil
	}
	if n, ok := protocolNumbers[strings.ToLower(p.StrVal)]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("unknown protocol %q", p.StrVal)
}

// Is reports whether p is the protocol named name (a known protocol name),
// in whichever form p was written: "tcp", "TCP" and 6 are all TCP.
func (p Protocol) Is(name string) bool {
	want, ok := protocolNumbers[strings.ToLower(name)]
	if !ok {
		return false
	}
	n, err := p.NumValue()
	return err == nil && n == want
}

// SupportsPorts reports whether the protocol has ports: TCP, UDP or SCTP, by
// name (case-insensitively) or number.
func (p Protocol) SupportsPorts() bool {
	n, err := p.NumValue()
	if err != nil {
		return false
	}
	return n == 6 || n == 17 || n == 132
}

// Validate reports a protocol Calico would reject: number 0, or a name that
// is not one of the six known names.
func (p Protocol) Validate() error {
	n, err := p.NumValue()
	if err != nil {
		return fmt.Errorf("protocol %q is not one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255", p.StrVal)
	}
	if n == 0 {
		return fmt.Errorf("protocol number 0 is invalid; use 1-255")
	}
	return nil
}

// MarshalJSON writes a name as a JSON string and a number as a JSON number.
func (p Protocol) MarshalJSON() ([]byte, error) {
	if p.Type == NumOrStringString {
		return json.Marshal(p.StrVal)
	}
	return json.Marshal(p.NumVal)
}

// UnmarshalJSON reads either form.
func (p *Protocol) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			return fmt.Errorf("protocol must not be empty")
		}
		*p = ProtocolFromString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("protocol must be a name or a number, not %s", b)
	}
	v, err := strconv.ParseUint(n.String(), 10, 8)
	if err != nil {
		return fmt.Errorf("protocol %s is not a number 1-255", n)
	}
	*p = ProtocolFromInt(uint8(v))
	return nil
}
