// Package numorstring holds the JSON union types of Calico's v3 API: values
// that are written either as a number or as a string (protocols, ports, AS
// numbers), keeping the form they were written in.
package numorstring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Port is a rule's port match: a single port (80), a range ("8000:8080") or
// a named port ("http") resolved per endpoint from its declared ports.
//
// In JSON a single port is a number and a range or name is a string; a
// string of digits ("80") is read as the single port.
type Port struct {
	MinPort  uint16
	MaxPort  uint16
	PortName string
}

// SinglePort is the port p.
func SinglePort(p uint16) Port { return Port{MinPort: p, MaxPort: p} }

// PortFromRange is the range min:max. It does not check the order; see
// Validate.
func PortFromRange(min, max uint16) Port { return Port{MinPort: min, MaxPort: max} }

// NamedPort is the named port name.
func NamedPort(name string) Port { return Port{PortName: name} }

// namedPortChars is what a string must look like to be taken for a port
// name when decoding; Validate applies the stricter IANA rules. Compiled on
// first use: the {1,128} compiles to 128 copies of the class, which every
// process linking this package would otherwise pay for at start.
var namedPortChars = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`) })

// PortFromString parses "80", "80:90" or a port name.
func PortFromString(s string) (Port, error) {
	if isDigits(s) {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return Port{}, fmt.Errorf("port %q is out of range 0-65535", s)
		}
		return SinglePort(uint16(n)), nil
	}
	if lo, hi, ok := strings.Cut(s, ":"); ok {
		if !isDigits(lo) || !isDigits(hi) {
			return Port{}, fmt.Errorf("port %q is not a number, range or name", s)
		}
		min, err1 := strconv.ParseUint(lo, 10, 16)
		max, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil {
			return Port{}, fmt.Errorf("port range %q is out of range 0-65535", s)
		}
		return PortFromRange(uint16(min), uint16(max)), nil
	}
	if !namedPortChars().MatchString(s) {
		return Port{}, fmt.Errorf("port %q is not a number, range or name", s)
	}
	return NamedPort(s), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// IsNamed reports whether p is a named port.
func (p Port) IsNamed() bool { return p.PortName != "" }

// String is the port as written in a manifest: "80", "80:90" or the name.
func (p Port) String() string {
	switch {
	case p.PortName != "":
		return p.PortName
	case p.MinPort == p.MaxPort:
		return strconv.Itoa(int(p.MinPort))
	default:
		return fmt.Sprintf("%d:%d", p.MinPort, p.MaxPort)
	}
}

// Validate reports what Calico's validator rejects: port 0 (alone or at
// either end of a range), a reversed range, an invalid port name, or a name
// combined with numbers.
func (p Port) Validate() error {
	if p.PortName != "" {
		if p.MinPort != 0 || p.MaxPort != 0 {
			return fmt.Errorf("named port %q must not also have port numbers", p.PortName)
		}
		if msg := portNameProblem(p.PortName); msg != "" {
			return fmt.Errorf("port name %q is invalid: %s", p.PortName, msg)
		}
		return nil
	}
	if p.MinPort > p.MaxPort {
		return fmt.Errorf("port range %d:%d is reversed", p.MinPort, p.MaxPort)
	}
	if p.MinPort == 0 {
		if p.MaxPort == 0 {
			return fmt.Errorf("port 0 is invalid; ports are 1-65535")
		}
		return fmt.Errorf("port range %d:%d starts at 0; ports are 1-65535", p.MinPort, p.MaxPort)
	}
	return nil
}

// MarshalJSON writes a single port as a number and anything else as a string.
func (p Port) MarshalJSON() ([]byte, error) {
	if p.PortName == "" && p.MinPort == p.MaxPort {
		return json.Marshal(p.MinPort)
	}
	return json.Marshal(p.String())
}

// UnmarshalJSON reads a number or a string.
func (p *Port) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := PortFromString(s)
		if err != nil {
			return err
		}
		*p = v
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("port must be a number or a string, not %s", b)
	}
	v, err := strconv.ParseUint(n.String(), 10, 16)
	if err != nil {
		return fmt.Errorf("port %s is not a number 0-65535", n)
	}
	*p = SinglePort(uint16(v))
	return nil
}

// portNameProblem applies the IANA service-name rules Kubernetes uses for
// named ports (and Calico for rule port names): at most 15 characters of
// a-z, 0-9 and '-', at least one letter, no '-' at either end and no "--".
// It returns "" for a good name.
func portNameProblem(name string) string {
	if len(name) > 15 {
		return "must be no more than 15 characters"
	}
	letter := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return "must contain only lower-case letters, digits and '-'"
		}
	}
	if !letter {
		return "must contain at least one letter"
	}
	if strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-") {
		return "must not begin or end with '-'"
	}
	if strings.Contains(name, "--") {
		return "must not contain consecutive '-'"
	}
	return ""
}

// ValidatePortName reports an invalid port name for an endpoint's declared
// ports, with the same rules as a rule's named port.
func ValidatePortName(name string) error {
	if name == "" {
		return fmt.Errorf("port name must not be empty")
	}
	if msg := portNameProblem(name); msg != "" {
		return fmt.Errorf("port name %q is invalid: %s", name, msg)
	}
	return nil
}
