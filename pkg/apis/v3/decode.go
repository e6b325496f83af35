package v3

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Decode turns one YAML or JSON document into its typed resource. It is
// strict, like kubectl with validation on: a wrong apiVersion, an unknown kind,
// an unknown or duplicated field, or a value of the wrong type is an error that
// names the field. Decode neither defaults nor validates.
func Decode(doc []byte) (Resource, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML or JSON: %w", err)
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || bytes.Equal(js, []byte("null")) {
		return nil, ErrEmptyDocument
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, fmt.Errorf("not a resource object: %w", err)
	}
	if tm.Kind == "" {
		return nil, &FieldError{Field: "kind", Detail: "missing"}
	}
	k, ok := KindByKind(tm.Kind)
	if !ok {
		return nil, &FieldError{Field: "kind", Detail: fmt.Sprintf("unknown kind %q for apiVersion %s", tm.Kind, APIVersion)}
	}
	if tm.APIVersion != APIVersion {
		return nil, &FieldError{Field: "apiVersion", Detail: fmt.Sprintf("%q is not supported for kind %s; use %s", tm.APIVersion, tm.Kind, APIVersion)}
	}
	// One pass finds unknown and duplicated fields, with their paths, and
	// matches names case-sensitively as Kubernetes does.
	r := k.New()
	PresizeRules(r, js)
	strictErrs, err := kjson.UnmarshalStrict(js, r, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if len(strictErrs) > 0 {
		return nil, StrictErrors(strictErrs)
	}
	if err != nil {
		// A value of the wrong type: decode again letting the target's types
		// guide YAML scalars, as kubectl does, so an unquoted
		// `containerID: 1234` or `routeReflector: true` headed for a string
		// field is that text. What still fails is a real error.
		r = k.New()
		if err := yaml.Unmarshal(doc, r); err != nil {
			return nil, decodeError(js, reflect.TypeOf(r), err)
		}
	}
	return r, nil
}

// ErrEmptyDocument is returned for a document with no content (a stray "---").
var ErrEmptyDocument = errors.New("empty document")

// StrictErrors turns sigs.k8s.io/json's strict-decoding errors
// (`unknown field "spec.foo"`, duplicates) into FieldErrors at their paths.
func StrictErrors(errs []error) ErrorList {
	out := make(ErrorList, len(errs))
	for i, e := range errs {
		out[i] = strictError(e)
	}
	return out
}

func strictError(err error) *FieldError {
	var fe kjson.FieldError
	if errors.As(err, &fe) {
		msg := err.Error()
		detail := "unknown field"
		if strings.HasPrefix(msg, "duplicate field") {
			detail = "duplicate field"
		}
		return &FieldError{Field: fe.FieldPath(), Detail: detail}
	}
	return &FieldError{Detail: err.Error()}
}

// decodeError gives a bad value the path of its field. encoding/json names
// the field of a plain type mismatch, but not of an error returned by a
// type's own UnmarshalJSON (ports, protocols, AS numbers), so those are
// located by walking the document against the Go type.
func decodeError(js []byte, t reflect.Type, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return &FieldError{Field: te.Field, Detail: fmt.Sprintf("cannot use %s value as %s", te.Value, te.Type)}
	}
	var doc any
	if json.Unmarshal(js, &doc) == nil {
		if path, verr := locateBadValue(doc, t, ""); verr != nil {
			return &FieldError{Field: string(path), Detail: verr.Error()}
		}
	}
	return err
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// locateBadValue finds the first value in doc that its Go type's own
// UnmarshalJSON rejects.
func locateBadValue(doc any, t reflect.Type, path Path) (Path, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		raw, _ := json.Marshal(doc)
		if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
			return path, err
		}
		return "", nil
	}
	switch v := doc.(type) {
	case map[string]any:
		switch t.Kind() {
		case reflect.Struct:
			fields := JSONFields(t)
			for key, val := range v {
				if ft, ok := fields[key]; ok {
					if p, err := locateBadValue(val, ft, path.Child(key)); err != nil {
						return p, err
					}
				}
			}
		case reflect.Map:
			for key, val := range v {
				if p, err := locateBadValue(val, t.Elem(), path.Key(key)); err != nil {
					return p, err
				}
			}
		}
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, val := range v {
				if p, err := locateBadValue(val, t.Elem(), path.Index(i)); err != nil {
					return p, err
				}
			}
		}
	}
	return "", nil
}

// JSONFields maps a struct's JSON names to field types, flattening embedded
// (inline) structs as encoding/json does.
func JSONFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && (name == "" || strings.Contains(opts, "inline")) {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range JSONFields(ft) {
					out[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
