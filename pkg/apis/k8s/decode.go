package k8s

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	kjson "sigs.k8s.io/json"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// The Kubernetes kinds this package converts.
const (
	NetworkingAPIVersion = "networking.k8s.io/v1"
	KindNetworkPolicy    = "NetworkPolicy"
	CoreAPIVersion       = "v1"
	KindNamespace        = "Namespace"
	// ClusterNetworkPolicy is served in both versions with one schema
	// (the CRD stores v1beta1 and converts with strategy None).
	PolicyAPIVersionV1alpha2 = "policy.networking.k8s.io/v1alpha2"
	PolicyAPIVersionV1beta1  = "policy.networking.k8s.io/v1beta1"
	KindClusterNetworkPolicy = "ClusterNetworkPolicy"
)

func isCNPVersion(apiVersion string) bool {
	return apiVersion == PolicyAPIVersionV1alpha2 || apiVersion == PolicyAPIVersionV1beta1
}

// IsKubernetesKind reports documents this package converts: a
// networking.k8s.io/v1 NetworkPolicy, a v1 Namespace or a
// policy.networking.k8s.io v1alpha2 or v1beta1 ClusterNetworkPolicy.
// Anything else (including projectcalico.org/v3 NetworkPolicy) is not for
// this package.
func IsKubernetesKind(apiVersion, kind string) bool {
	return (apiVersion == NetworkingAPIVersion && kind == KindNetworkPolicy) ||
		(apiVersion == CoreAPIVersion && kind == KindNamespace) ||
		(isCNPVersion(apiVersion) && kind == KindClusterNetworkPolicy)
}

// Decode strictly decodes one YAML or JSON document of a kind
// IsKubernetesKind accepts and converts it: a NetworkPolicy to a
// *v3.NetworkPolicy (NetworkPolicyToV3), a Namespace to a *v3.Profile
// (NamespaceToProfile), a ClusterNetworkPolicy to a *v3.GlobalNetworkPolicy
// (ClusterNetworkPolicyToV3). As with v3.Decode, an unknown or duplicated field or
// a value of the wrong type is an error naming the field; so is anything the
// Kubernetes API server would refuse. A NetworkPolicy without a namespace is
// in DefaultNamespace. The result has passed v3.SetDefaults and v3.Validate.
func Decode(doc []byte) (v3.Resource, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML or JSON: %w", err)
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || bytes.Equal(js, []byte("null")) {
		return nil, v3.ErrEmptyDocument
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, fmt.Errorf("not a resource object: %w", err)
	}
	switch {
	case tm.Kind == "":
		return nil, &v3.FieldError{Field: "kind", Detail: "missing"}
	case tm.Kind == KindNetworkPolicy && tm.APIVersion == NetworkingAPIVersion:
		np := &networkingv1.NetworkPolicy{}
		if err := decodeStrict(js, np); err != nil {
			return nil, err
		}
		out, err := NetworkPolicyToV3(np)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return out, nil
	case tm.Kind == KindNamespace && tm.APIVersion == CoreAPIVersion:
		ns := &corev1.Namespace{}
		if err := decodeStrict(js, ns); err != nil {
			return nil, err
		}
		out, err := NamespaceToProfile(ns)
		if err != nil {
			return nil, err
		}
		return out, nil
	case tm.Kind == KindClusterNetworkPolicy && isCNPVersion(tm.APIVersion):
		cnp := &cnpv1alpha2.ClusterNetworkPolicy{}
		if err := decodeStrict(js, cnp); err != nil {
			return nil, err
		}
		out, err := clusterNetworkPolicyToV3(cnp, checkCNPRequired(js))
		if err != nil {
			return nil, err
		}
		return out, nil
	case tm.Kind == KindClusterNetworkPolicy:
		return nil, &v3.FieldError{Field: "apiVersion", Detail: fmt.Sprintf("%q is not supported for kind %s; use %s or %s", tm.APIVersion, tm.Kind, PolicyAPIVersionV1beta1, PolicyAPIVersionV1alpha2)}
	case tm.Kind == KindNetworkPolicy:
		return nil, &v3.FieldError{Field: "apiVersion", Detail: fmt.Sprintf("%q is not supported for kind %s; use %s (Kubernetes) or %s (Calico)", tm.APIVersion, tm.Kind, NetworkingAPIVersion, v3.APIVersion)}
	case tm.Kind == KindNamespace:
		return nil, &v3.FieldError{Field: "apiVersion", Detail: fmt.Sprintf("%q is not supported for kind %s; use %s", tm.APIVersion, tm.Kind, CoreAPIVersion)}
	default:
		return nil, &v3.FieldError{Field: "kind", Detail: fmt.Sprintf("kind %q of apiVersion %q is not a Kubernetes kind tortie converts (%s %s, %s %s, %s %s)", tm.Kind, tm.APIVersion, NetworkingAPIVersion, KindNetworkPolicy, CoreAPIVersion, KindNamespace, PolicyAPIVersionV1beta1, KindClusterNetworkPolicy)}
	}
}

// decodeStrict decodes into obj, reporting unknown and duplicated fields with
// their paths and matching names case-sensitively, as the API server does.
// A value of the wrong type is an error at its path, as kubectl and the API
// server make it: unlike v3.Decode there is no second chance with the
// target's types guiding YAML scalars, because YAML 1.1 reads an unquoted
// `ns: y` as the boolean true, and a selector on "true" would be a silent
// mistake where Kubernetes reports one.
func decodeStrict(js []byte, obj any) error {
	strictErrs, err := kjson.UnmarshalStrict(js, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if len(strictErrs) > 0 {
		return v3.StrictErrors(strictErrs)
	}
	if err != nil {
		return typeError(js, reflect.TypeOf(obj), err)
	}
	return nil
}

// typeError gives a bad value the full path of its field, list indexes and
// map keys included ("spec.ingress[0].ports[0].port"), by walking the
// document against the Go type; encoding/json's own path (without indexes)
// is the fallback.
func typeError(js []byte, t reflect.Type, err error) error {
	var doc any
	if json.Unmarshal(js, &doc) == nil {
		if path, detail := locateBadValue(doc, t, ""); detail != "" {
			return &v3.FieldError{Field: string(path), Detail: detail}
		}
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return &v3.FieldError{Field: te.Field, Detail: fmt.Sprintf("cannot use %s value as %s", te.Value, te.Type)}
	}
	return err
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// locateBadValue finds the first value (in document order, map keys sorted)
// that cannot be decoded into its Go type, and says why.
func locateBadValue(doc any, t reflect.Type, path v3.Path) (v3.Path, string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if doc == nil {
		return "", ""
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		raw, _ := json.Marshal(doc)
		if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
			return path, err.Error()
		}
		return "", ""
	}
	mismatch := func() (v3.Path, string) {
		return path, fmt.Sprintf("cannot use %s value as %s", jsonKind(doc), t.Kind())
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := doc.(map[string]any)
		if !ok {
			return mismatch()
		}
		fields := v3.JSONFields(t)
		for _, key := range sortedKeys(m) {
			if ft, ok := fields[key]; ok {
				if p, d := locateBadValue(m[key], ft, path.Child(key)); d != "" {
					return p, d
				}
			}
		}
	case reflect.Map:
		m, ok := doc.(map[string]any)
		if !ok {
			return mismatch()
		}
		for _, key := range sortedKeys(m) {
			if p, d := locateBadValue(m[key], t.Elem(), path.Key(key)); d != "" {
				return p, d
			}
		}
	case reflect.Slice, reflect.Array:
		l, ok := doc.([]any)
		if !ok {
			return mismatch()
		}
		for i, v := range l {
			if p, d := locateBadValue(v, t.Elem(), path.Index(i)); d != "" {
				return p, d
			}
		}
	case reflect.String:
		if _, ok := doc.(string); !ok {
			return mismatch()
		}
	case reflect.Bool:
		if _, ok := doc.(bool); !ok {
			return mismatch()
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if _, ok := doc.(float64); !ok {
			return mismatch()
		}
		raw, _ := json.Marshal(doc)
		if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
			return path, fmt.Sprintf("%s is not a valid %s", raw, t.Kind())
		}
	}
	return "", ""
}

func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "bool"
	case float64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "null"
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
