package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// jsonPatchOp is one operation of an RFC 6902 JSON patch.
type jsonPatchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	From  string          `json:"from"`
	Value json.RawMessage `json:"value"`
}

// parseJSONPatch reads an RFC 6902 patch: a JSON array of operations.
func parseJSONPatch(patch []byte) ([]jsonPatchOp, error) {
	var ops []jsonPatchOp
	dec := json.NewDecoder(bytes.NewReader(patch))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ops); err != nil {
		return nil, fmt.Errorf("a JSON patch is a JSON array of operations ({\"op\": ..., \"path\": ...}): %w", err)
	}
	for i, op := range ops {
		switch op.Op {
		case "add", "replace", "test":
			if op.Value == nil {
				return nil, fmt.Errorf("operation %d (%s %s): no value", i+1, op.Op, op.Path)
			}
		case "move", "copy":
			if _, err := pointer(op.From); err != nil {
				return nil, fmt.Errorf("operation %d (%s %s): from: %w", i+1, op.Op, op.Path, err)
			}
		case "remove":
		default:
			return nil, fmt.Errorf("operation %d: unknown op %q (add, remove, replace, move, copy or test)", i+1, op.Op)
		}
		if _, err := pointer(op.Path); err != nil {
			return nil, fmt.Errorf("operation %d (%s): path: %w", i+1, op.Op, err)
		}
	}
	return ops, nil
}

// applyJSONPatch applies the operations in order to a decoded JSON
// document; any failing operation fails the patch.
func applyJSONPatch(doc any, ops []jsonPatchOp) (any, error) {
	for i, op := range ops {
		var err error
		if doc, err = applyOp(doc, op); err != nil {
			return nil, fmt.Errorf("JSON patch operation %d (%s %s): %w", i+1, op.Op, op.Path, err)
		}
	}
	return doc, nil
}

func applyOp(doc any, op jsonPatchOp) (any, error) {
	path, _ := pointer(op.Path)
	var value any
	if op.Value != nil {
		if err := json.Unmarshal(op.Value, &value); err != nil {
			return nil, err
		}
	}
	switch op.Op {
	case "add":
		return addAt(doc, path, value)
	case "remove":
		return removeAt(doc, path)
	case "replace":
		if len(path) == 0 {
			return value, nil
		}
		doc, err := removeAt(doc, path)
		if err != nil {
			return nil, err
		}
		return addAt(doc, path, value)
	case "test":
		cur, err := valueAt(doc, path)
		if err != nil {
			return nil, err
		}
		if !reflect.DeepEqual(cur, value) {
			return nil, fmt.Errorf("test failed: the value is %s", compactJSON(cur))
		}
		return doc, nil
	}
	from, _ := pointer(op.From)
	v, err := valueAt(doc, from)
	if err != nil {
		return nil, fmt.Errorf("from %s: %w", op.From, err)
	}
	if op.Op == "move" {
		if len(path) > len(from) && slices.Equal(path[:len(from)], from) {
			return nil, errors.New("cannot move a value into itself")
		}
		if doc, err = removeAt(doc, from); err != nil {
			return nil, err
		}
	} else {
		v = deepCopyJSON(v)
	}
	return addAt(doc, path, v)
}

// pointer splits an RFC 6901 JSON pointer into its unescaped tokens; ""
// is the whole document.
func pointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("%q is not a JSON pointer (it starts with /)", p)
	}
	toks := strings.Split(p[1:], "/")
	for i, t := range toks {
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks, nil
}

// arrayIndex reads an array index token; "-" (the end) only when
// appending.
func arrayIndex(tok string, n int, appending bool) (int, error) {
	if tok == "-" && appending {
		return n, nil
	}
	i, err := strconv.Atoi(tok)
	if err != nil || i < 0 || (len(tok) > 1 && tok[0] == '0') {
		return 0, fmt.Errorf("%q is not an array index", tok)
	}
	limit := n - 1
	if appending {
		limit = n
	}
	if i > limit {
		return 0, fmt.Errorf("index %d is out of range (the array has %d elements)", i, n)
	}
	return i, nil
}

func valueAt(doc any, path []string) (any, error) {
	cur := doc
	for _, tok := range path {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				return nil, fmt.Errorf("no member %q", tok)
			}
			cur = v
		case []any:
			i, err := arrayIndex(tok, len(c), false)
			if err != nil {
				return nil, err
			}
			cur = c[i]
		default:
			return nil, fmt.Errorf("no member %q: not an object or array", tok)
		}
	}
	return cur, nil
}

// atParent runs fn on the container holding the last token of path (which
// must not be empty) and returns the document with fn's result in its
// place.
func atParent(doc any, path []string, fn func(container any, tok string) (any, error)) (any, error) {
	if len(path) == 1 {
		return fn(doc, path[0])
	}
	switch c := doc.(type) {
	case map[string]any:
		child, ok := c[path[0]]
		if !ok {
			return nil, fmt.Errorf("no member %q", path[0])
		}
		nc, err := atParent(child, path[1:], fn)
		if err != nil {
			return nil, err
		}
		c[path[0]] = nc
		return c, nil
	case []any:
		i, err := arrayIndex(path[0], len(c), false)
		if err != nil {
			return nil, err
		}
		nc, err := atParent(c[i], path[1:], fn)
		if err != nil {
			return nil, err
		}
		c[i] = nc
		return c, nil
	}
	return nil, fmt.Errorf("no member %q: not an object or array", path[0])
}

func addAt(doc any, path []string, value any) (any, error) {
	if len(path) == 0 {
		return value, nil
	}
	return atParent(doc, path, func(container any, tok string) (any, error) {
		switch c := container.(type) {
		case map[string]any:
			c[tok] = value
			return c, nil
		case []any:
			i, err := arrayIndex(tok, len(c), true)
			if err != nil {
				return nil, err
			}
			out := make([]any, 0, len(c)+1)
			out = append(append(append(out, c[:i]...), value), c[i:]...)
			return out, nil
		}
		return nil, fmt.Errorf("cannot add %q: not an object or array", tok)
	})
}

func removeAt(doc any, path []string) (any, error) {
	if len(path) == 0 {
		return nil, errors.New("cannot remove the whole document")
	}
	return atParent(doc, path, func(container any, tok string) (any, error) {
		switch c := container.(type) {
		case map[string]any:
			if _, ok := c[tok]; !ok {
				return nil, fmt.Errorf("no member %q", tok)
			}
			delete(c, tok)
			return c, nil
		case []any:
			i, err := arrayIndex(tok, len(c), false)
			if err != nil {
				return nil, err
			}
			return append(c[:i:i], c[i+1:]...), nil
		}
		return nil, fmt.Errorf("no member %q: not an object or array", tok)
	})
}

func deepCopyJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopyJSON(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = deepCopyJSON(e)
		}
		return l
	}
	return v
}

func compactJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
