package v3

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
	js = coerceMetadataStrings(js)
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
	r := k.New()
	strictErrs, err := kjson.UnmarshalStrict(js, r, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, decodeError(err)
	}
	if len(strictErrs) > 0 {
		var errs ErrorList
		for _, se := range strictErrs {
			errs = append(errs, strictError(se))
		}
		return nil, errs
	}
	return r, nil
}

// ErrEmptyDocument is returned for a document with no content (a stray "---").
var ErrEmptyDocument = errors.New("empty document")

// strictError turns sigs.k8s.io/json's `unknown field "spec.foo"` into a
// FieldError at that path.
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

// decodeError gives a type mismatch the path of its field.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return &FieldError{Field: te.Field, Detail: fmt.Sprintf("cannot use %s value as %s", te.Value, te.Type)}
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe
	}
	return err
}

// coerceMetadataStrings turns unquoted scalar label and annotation values
// into strings. YAML reads `routeReflector: true` as a boolean, but label and
// annotation values are strings and Calico's own documentation writes them
// unquoted, so the literal text is taken as the value.
func coerceMetadataStrings(js []byte) []byte {
	var obj map[string]json.RawMessage
	if json.Unmarshal(js, &obj) != nil {
		return js
	}
	var meta map[string]json.RawMessage
	if raw, ok := obj["metadata"]; !ok || json.Unmarshal(raw, &meta) != nil {
		return js
	}
	changed := false
	for _, field := range []string{"labels", "annotations"} {
		var m map[string]json.RawMessage
		if raw, ok := meta[field]; !ok || json.Unmarshal(raw, &m) != nil {
			continue
		}
		coerced := false
		for k, v := range m {
			if len(v) > 0 && (v[0] == 't' || v[0] == 'f' || v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
				m[k], _ = json.Marshal(string(v))
				coerced = true
			}
		}
		if coerced {
			meta[field], _ = json.Marshal(m)
			changed = true
		}
	}
	if !changed {
		return js
	}
	obj["metadata"], _ = json.Marshal(meta)
	out, err := json.Marshal(obj)
	if err != nil {
		return js
	}
	return out
}
