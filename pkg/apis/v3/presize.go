package v3

// PresizeRules gives r's ingress and egress rule slices the capacity that
// js, r's JSON, has rules for, before js is decoded into r. A JSON decoder
// grows a slice one doubling at a time, and a Rule is about 400 bytes: the
// 100 rules of one policy cost 100 KB of copies and garbage, which for a
// manifest of 100 such policies was the largest part of decoding it. Only
// capacity is set, and only for a rule list js has entries in: the decoded
// value is the same with or without it, and js that this scan does not
// understand (not an object, no "spec", malformed) just goes without.
func PresizeRules(r Resource, js []byte) {
	in, eg := ruleLists(r)
	if in == nil {
		return
	}
	spec, ok := member(js, skipSpace(js, 0), "spec")
	if !ok {
		return
	}
	for _, l := range []struct {
		key   string
		rules *[]Rule
	}{{"ingress", in}, {"egress", eg}} {
		if at, ok := member(js, spec, l.key); ok && *l.rules == nil {
			if n := elements(js, at); n > 0 {
				*l.rules = make([]Rule, 0, n)
			}
		}
	}
}

// ruleLists returns r's ingress and egress rule lists, or nils for a kind
// without rules.
func ruleLists(r Resource) (in, eg *[]Rule) {
	switch p := r.(type) {
	case *NetworkPolicy:
		return &p.Spec.Ingress, &p.Spec.Egress
	case *GlobalNetworkPolicy:
		return &p.Spec.Ingress, &p.Spec.Egress
	case *StagedNetworkPolicy:
		return &p.Spec.Ingress, &p.Spec.Egress
	case *StagedGlobalNetworkPolicy:
		return &p.Spec.Ingress, &p.Spec.Egress
	case *Profile:
		return &p.Spec.Ingress, &p.Spec.Egress
	}
	return nil, nil
}

// member returns where the value of key starts in the object at js[i:],
// the last such member as a JSON decoder keeps the last.
func member(js []byte, i int, key string) (int, bool) {
	if i >= len(js) || js[i] != '{' {
		return 0, false
	}
	found, at := false, 0
	i = skipSpace(js, i+1)
	if i < len(js) && js[i] == '}' {
		return 0, false
	}
	for i < len(js) && js[i] == '"' {
		end := skipValue(js, i)
		if end < 0 {
			return 0, false
		}
		k := js[i+1 : end-1]
		i = skipSpace(js, end)
		if i >= len(js) || js[i] != ':' {
			return 0, false
		}
		i = skipSpace(js, i+1)
		if string(k) == key {
			found, at = true, i
		}
		if i = skipValue(js, i); i < 0 {
			return 0, false
		}
		i = skipSpace(js, i)
		if i < len(js) && js[i] == ',' {
			i = skipSpace(js, i+1)
			continue
		}
		if i < len(js) && js[i] == '}' {
			return at, found
		}
		return 0, false
	}
	return 0, false
}

// elements counts the elements of the array at js[i:], or returns 0.
func elements(js []byte, i int) int {
	if i >= len(js) || js[i] != '[' {
		return 0
	}
	i = skipSpace(js, i+1)
	if i < len(js) && js[i] == ']' {
		return 0
	}
	for n := 1; i < len(js); n++ {
		if i = skipValue(js, i); i < 0 {
			return 0
		}
		i = skipSpace(js, i)
		if i < len(js) && js[i] == ']' {
			return n
		}
		if i >= len(js) || js[i] != ',' {
			return 0
		}
		i = skipSpace(js, i+1)
	}
	return 0
}

// skipValue returns the index after the JSON value at js[i:], or -1. It
// checks only what it needs to find the value's end: brackets and strings.
func skipValue(js []byte, i int) int {
	depth := 0
	for i < len(js) {
		switch c := js[i]; c {
		case '"':
			i++
			for i < len(js) && js[i] != '"' {
				if js[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(js) {
				return -1
			}
			i++
		case '{', '[':
			depth++
			i++
		case '}', ']':
			if depth == 0 {
				return i // the end of a number or literal, before the closer
			}
			depth--
			i++
		case ',', ' ', '\t', '\n', '\r', ':':
			if depth == 0 {
				return i
			}
			i++
		default:
			i++
		}
		if depth == 0 && i > 0 && (js[i-1] == '"' || js[i-1] == '}' || js[i-1] == ']') {
			return i
		}
	}
	if depth == 0 {
		return i
	}
	return -1
}

func skipSpace(js []byte, i int) int {
	for i < len(js) && (js[i] == ' ' || js[i] == '\t' || js[i] == '\n' || js[i] == '\r') {
		i++
	}
	return i
}
