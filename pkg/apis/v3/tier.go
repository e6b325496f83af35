package v3

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Tier groups policies; tiers are evaluated in order, and a tier whose
// policies select an endpoint but match nothing ends with its defaultAction.
type Tier struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              TierSpec `json:"spec,omitempty"`
	// Status is stored as {} when empty, as Calico writes it.
	Status TierStatus `json:"status,omitempty"`
}

// TierSpec is the body of a Tier.
type TierSpec struct {
	// Order: lower first; unset means after every ordered tier.
	Order *float64 `json:"order,omitempty"`
	// DefaultAction is Deny (the default) or Pass.
	DefaultAction *Action `json:"defaultAction,omitempty"`
}

// TierStatus is what a controller reports about a tier.
type TierStatus struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Orders and default actions of the tiers Calico creates itself, which it
// requires to keep those values.
const (
	KubeAdminTierName     = "kube-admin"
	KubeBaselineTierName  = "kube-baseline"
	KubeAdminTierOrder    = float64(1_000)
	DefaultTierOrder      = float64(1_000_000)
	KubeBaselineTierOrder = float64(10_000_000)
)

// BuiltinTier is a tier Calico creates on the datastore's first write.
type BuiltinTier struct {
	Name          string
	Order         float64
	DefaultAction Action
}

// BuiltinTiers lists them in the order Calico creates them.
var BuiltinTiers = []BuiltinTier{
	{DefaultTierName, DefaultTierOrder, Deny},
	{KubeAdminTierName, KubeAdminTierOrder, Pass},
	{KubeBaselineTierName, KubeBaselineTierOrder, Pass},
}

// LookupBuiltinTier finds a built-in tier by name.
func LookupBuiltinTier(name string) (BuiltinTier, bool) {
	for _, bt := range BuiltinTiers {
		if bt.Name == name {
			return bt, true
		}
	}
	return BuiltinTier{}, false
}

func (t *Tier) setDefaults() {
	if t.Spec.DefaultAction == nil || *t.Spec.DefaultAction == "" {
		a := Deny
		t.Spec.DefaultAction = &a
	}
}

// validateTierName: tier names are DNS labels (so, no dots: a dot separates
// a policy's tier prefix from its name).
func validateTierName(p Path, name string) ErrorList {
	if name == "" {
		return ErrorList{p.Errorf("required")}
	}
	if strings.Contains(name, ".") {
		return ErrorList{p.Errorf("%q: tier names must not contain '.'", name)}
	}
	var errs ErrorList
	for _, msg := range validation.IsDNS1123Label(name) {
		errs = append(errs, p.Errorf("%q: %s", name, msg))
	}
	return errs
}

func (t *Tier) validateName(p Path) ErrorList { return validateTierName(p, t.Name) }

func (t *Tier) validate() ErrorList {
	spec := Path("spec")
	var errs ErrorList
	errs = append(errs, validateOrder(spec.Child("order"), t.Spec.Order)...)
	if a := t.Spec.DefaultAction; a != nil && *a != "" && *a != Deny && *a != Pass {
		errs = append(errs, spec.Child("defaultAction").Errorf("%q is not one of Deny, Pass", *a))
	}
	if f, ok := LookupBuiltinTier(t.Name); ok {
		if t.Spec.Order == nil || *t.Spec.Order != f.Order {
			errs = append(errs, spec.Child("order").Errorf("the %s tier's order must be %v", t.Name, f.Order))
		}
		action := Deny
		if t.Spec.DefaultAction != nil && *t.Spec.DefaultAction != "" {
			action = *t.Spec.DefaultAction
		}
		if action != f.DefaultAction && (action == Deny || action == Pass) {
			errs = append(errs, spec.Child("defaultAction").Errorf("the %s tier's defaultAction must be %s", t.Name, f.DefaultAction))
		}
	}
	return errs
}
