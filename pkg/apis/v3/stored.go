package v3

import (
	"bytes"
	"encoding/json"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// UnmarshalStored decodes a stored value into r, a resource as NewObject
// returns it, with exactly the outcome of json.Unmarshal.
//
// A WorkloadEndpoint, the kind a datastore at scale holds most of (100,000
// of them cost an agent's cold start 1 s of encoding/json), is first read
// by a decoder that knows its fields and nothing else: unescaped strings,
// string lists and maps, and the few fields with a decoder of their own
// handed to it. Anything outside that (an unknown or differently cased
// key, a repeated member, an escape, null, invalid UTF-8, malformed JSON)
// makes it give up, and json.Unmarshal decodes the value from the start,
// so what it accepts, rejects and reports is json.Unmarshal's own.
func UnmarshalStored(js []byte, r Resource) error {
	if w, ok := r.(*WorkloadEndpoint); ok {
		tm := w.TypeMeta
		if decodeWorkloadEndpoint(js, w) {
			return nil
		}
		*w = WorkloadEndpoint{TypeMeta: tm}
	}
	PresizeRules(r, js)
	return json.Unmarshal(js, r)
}

// decodeWorkloadEndpoint fills w from js and reports whether it could; on
// false w holds a part of js and is to be thrown away.
func decodeWorkloadEndpoint(js []byte, w *WorkloadEndpoint) bool {
	s := scanner{js: js}
	ok := s.object(func(key []byte) bool {
		switch string(key) {
		case "kind":
			return s.str(&w.Kind)
		case "apiVersion":
			return s.str(&w.APIVersion)
		case "metadata":
			return s.meta(&w.ObjectMeta)
		case "spec":
			return s.endpointSpec(&w.Spec)
		}
		return false
	})
	return ok && s.end()
}

func (s *scanner) meta(m *metav1.ObjectMeta) bool {
	return s.object(func(key []byte) bool {
		switch string(key) {
		case "name":
			return s.str(&m.Name)
		case "generateName":
			return s.str(&m.GenerateName)
		case "namespace":
			return s.str(&m.Namespace)
		case "uid":
			var uid string
			ok := s.str(&uid)
			m.UID = types.UID(uid)
			return ok
		case "resourceVersion":
			return s.str(&m.ResourceVersion)
		case "creationTimestamp":
			// As metav1.Time's UnmarshalJSON reads null and a string.
			if s.null() {
				return true
			}
			b, ok := s.raw()
			if !ok {
				return false
			}
			t, err := time.Parse(time.RFC3339, string(b))
			m.CreationTimestamp.Time = t.Local()
			return err == nil
		case "labels":
			return s.stringMap(&m.Labels)
		case "annotations":
			return s.stringMap(&m.Annotations)
		}
		return false
	})
}

func (s *scanner) endpointSpec(p *WorkloadEndpointSpec) bool {
	return s.object(func(key []byte) bool {
		switch string(key) {
		case "orchestrator":
			return s.str(&p.Orchestrator)
		case "workload":
			return s.str(&p.Workload)
		case "node":
			return s.str(&p.Node)
		case "containerID":
			return s.str(&p.ContainerID)
		case "pod":
			return s.str(&p.Pod)
		case "endpoint":
			return s.str(&p.Endpoint)
		case "serviceAccountName":
			return s.str(&p.ServiceAccountName)
		case "ipNetworks":
			return s.strings(&p.IPNetworks)
		case "ipNATs":
			return s.delegate(&p.IPNATs)
		case "ipv4Gateway":
			return s.str(&p.IPv4Gateway)
		case "ipv6Gateway":
			return s.str(&p.IPv6Gateway)
		case "profiles":
			return s.strings(&p.Profiles)
		case "interfaceName":
			return s.str(&p.InterfaceName)
		case "mac":
			return s.str(&p.MAC)
		case "ports":
			return s.delegate(&p.Ports)
		case "allowSpoofedSourcePrefixes":
			return s.strings(&p.AllowSpoofedSourcePrefixes)
		}
		return false
	})
}

// scanner reads the JSON at js[i:] for the decoders above. Each method
// reports false for anything it does not read exactly as json.Unmarshal
// would; a caller then stops.
type scanner struct {
	js []byte
	i  int
}

func (s *scanner) space() {
	s.i = skipSpace(s.js, s.i)
}

// next skips space and reports whether c is next, stepping over it.
func (s *scanner) next(c byte) bool {
	s.space()
	if s.i < len(s.js) && s.js[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only space is left.
func (s *scanner) end() bool {
	s.space()
	return s.i == len(s.js)
}

// object reads an object, calling member with each key once the scanner is
// at its value; member reads the value. A key seen twice in one object
// stops it: json.Unmarshal's handling of that (the later value decoded
// over the earlier) is not worth copying.
func (s *scanner) object(member func(key []byte) bool) bool {
	if !s.next('{') {
		return false
	}
	if s.next('}') {
		return true
	}
	var seenAt [16][]byte
	seen := seenAt[:0]
	for {
		s.space()
		key, ok := s.raw()
		if !ok || !s.next(':') {
			return false
		}
		for _, k := range seen {
			if string(k) == string(key) {
				return false
			}
		}
		seen = append(seen, key)
		s.space()
		if !member(key) {
			return false
		}
		if s.next(',') {
			continue
		}
		return s.next('}')
	}
}

// raw reads a string without escapes and returns its bytes (js's own).
// Control characters, escapes and invalid UTF-8 stop it: json.Unmarshal
// rejects the first, and turns the others into other bytes.
func (s *scanner) raw() ([]byte, bool) {
	if s.i >= len(s.js) || s.js[s.i] != '"' {
		return nil, false
	}
	start, ascii := s.i+1, true
	for i := start; i < len(s.js); i++ {
		switch c := s.js[i]; {
		case c == '"':
			b := s.js[start:i]
			if !ascii && !utf8.Valid(b) {
				return nil, false
			}
			s.i = i + 1
			return b, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// null reports whether null is next, stepping over it.
func (s *scanner) null() bool {
	if !bytes.HasPrefix(s.js[s.i:], []byte("null")) {
		return false
	}
	s.i += len("null")
	return true
}

func (s *scanner) str(to *string) bool {
	b, ok := s.raw()
	if ok {
		*to = string(b)
	}
	return ok
}

// strings reads an array of strings; [] is an empty list, not nil, as
// json.Unmarshal has it.
func (s *scanner) strings(to *[]string) bool {
	if !s.next('[') {
		return false
	}
	l := []string{}
	if !s.next(']') {
		for {
			s.space()
			b, ok := s.raw()
			if !ok {
				return false
			}
			l = append(l, string(b))
			if s.next(',') {
				continue
			}
			if !s.next(']') {
				return false
			}
			break
		}
	}
	*to = l
	return true
}

// stringMap reads an object of strings; {} is an empty map, not nil.
func (s *scanner) stringMap(to *map[string]string) bool {
	m := map[string]string{}
	ok := s.object(func(key []byte) bool {
		b, ok := s.raw()
		if ok {
			m[string(key)] = string(b)
		}
		return ok
	})
	if ok {
		*to = m
	}
	return ok
}

// value returns the bytes of the value at the scanner, without checking
// them: a caller hands them to a decoder that does.
func (s *scanner) value() ([]byte, bool) {
	end := skipValue(s.js, s.i)
	if end <= s.i {
		return nil, false
	}
	v := s.js[s.i:end]
	s.i = end
	return v, true
}

// delegate decodes the value at the scanner into to with json.Unmarshal.
func (s *scanner) delegate(to any) bool {
	raw, ok := s.value()
	return ok && json.Unmarshal(raw, to) == nil
}
