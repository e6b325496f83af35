package v3

import (
	"encoding/json"
	"testing"
)

func marshalString(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func tierDoc(name, spec string) string {
	return "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: " + name + "\nspec:\n" + spec
}

func TestTierValidation(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "plain", doc: tierDoc("security", "  order: 100\n")},
		{name: "pass", doc: tierDoc("security", "  defaultAction: Pass\n")},
		{name: "no order", doc: tierDoc("last", "  defaultAction: Deny\n")},
		{name: "default tier", doc: tierDoc("default", "  order: 1000000\n")},
		{name: "kube-admin", doc: tierDoc("kube-admin", "  order: 1000\n  defaultAction: Pass\n")},
		{name: "kube-baseline", doc: tierDoc("kube-baseline", "  order: 10000000\n  defaultAction: Pass\n")},
		{name: "bad action", doc: tierDoc("t1", "  defaultAction: Allow\n"),
			errs: []want{{"spec.defaultAction", `"Allow" is not one of Deny, Pass`}}},
		{name: "dotted name", doc: tierDoc("a.b", ""),
			errs: []want{{"metadata.name", "tier names must not contain '.'"}}},
		{name: "upper-case name", doc: tierDoc("Sec", ""),
			errs: []want{{"metadata.name", "RFC 1123 label"}}},
		{name: "default tier order", doc: tierDoc("default", "  order: 5\n  defaultAction: Pass\n"),
			errs: []want{{"spec.order", "the default tier's order must be 1e+06"}, {"spec.defaultAction", "the default tier's defaultAction must be Deny"}}},
		{name: "kube-admin defaults to Deny", doc: tierDoc("kube-admin", "  order: 1000\n"),
			errs: []want{{"spec.defaultAction", "the kube-admin tier's defaultAction must be Pass"}}},
	})
}

func TestTierDefaultsAndJSON(t *testing.T) {
	tr := &Tier{}
	tr.Kind, tr.APIVersion, tr.Name = KindTier, APIVersion, "t"
	SetDefaults(tr)
	SetDefaults(tr)
	if tr.Spec.DefaultAction == nil || *tr.Spec.DefaultAction != Deny {
		t.Fatalf("defaultAction = %v", tr.Spec.DefaultAction)
	}
	pass := Pass
	tr.Spec.DefaultAction = &pass
	SetDefaults(tr)
	if *tr.Spec.DefaultAction != Pass {
		t.Fatal("explicit Pass overwritten")
	}
	got, err := marshalString(tr)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"kind":"Tier","apiVersion":"projectcalico.org/v3","metadata":{"name":"t"},"spec":{"defaultAction":"Pass"},"status":{}}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
