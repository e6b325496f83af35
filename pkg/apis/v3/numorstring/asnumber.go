package numorstring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// ASNumber is a 32-bit BGP autonomous system number. Manifests may write it as
// a JSON number (64512), as a string of digits ("64512"), or in the RFC 5396
// "asdot" form "high.low" ("1.10" is 1*65536+10 = 65546). It is always
// written back as a JSON number, which is what Calico stores.
type ASNumber uint32

// ASNumberFromString parses the plain or the asdot form.
func ASNumberFromString(s string) (ASNumber, error) {
	if s == "" {
		return 0, fmt.Errorf("AS number must not be empty")
	}
	if hi, lo, dotted := strings.Cut(s, "."); dotted {
		h, err1 := parseUint(hi, 16)
		l, err2 := parseUint(lo, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("invalid AS number %q: the dotted form is <0-65535>.<0-65535>", s)
		}
		return ASNumber(h<<16 | l), nil
	}
	n, err := parseUint(s, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid AS number %q: expected 0-4294967295 or the dotted form <0-65535>.<0-65535>", s)
	}
	return ASNumber(n), nil
}

// parseUint accepts only decimal digits (no sign, no spaces) that fit in bits.
func parseUint(s string, bits int) (uint64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a number")
	}
	return strconv.ParseUint(s, 10, bits)
}

// String is the plain decimal form.
func (a ASNumber) String() string { return strconv.FormatUint(uint64(a), 10) }

// MarshalJSON writes a JSON number.
func (a ASNumber) MarshalJSON() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalJSON reads a JSON number or a string in the plain or dotted form.
func (a *ASNumber) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		n, err := ASNumberFromString(s)
		if err != nil {
			return err
		}
		*a = n
		return nil
	}
	n, err := parseUint(string(b), 32)
	if err != nil {
		return fmt.Errorf("invalid AS number %s: expected an integer 0-4294967295 or a string such as \"64512\" or \"1.10\"", b)
	}
	*a = ASNumber(n)
	return nil
}
