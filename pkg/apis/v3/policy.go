package v3

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// PolicyType is a direction a policy applies to.
type PolicyType string

const (
	PolicyTypeIngress PolicyType = "Ingress"
	PolicyTypeEgress  PolicyType = "Egress"
)

// PolicyPerformanceHint is a hint to the policy engine; hints never change
// what a policy enforces.
type PolicyPerformanceHint string

// PerfHintAssumeNeededOnEveryNode makes every node program the policy as if
// a local endpoint needed it.
const PerfHintAssumeNeededOnEveryNode PolicyPerformanceHint = "AssumeNeededOnEveryNode"

// StagedAction is what a staged policy would do to its enforced counterpart.
type StagedAction string

const (
	StagedActionSet    StagedAction = "Set"
	StagedActionDelete StagedAction = "Delete"
	StagedActionLearn  StagedAction = "Learn"
	StagedActionIgnore StagedAction = "Ignore"
)

// DefaultTierName is the tier of a policy that names none.
const DefaultTierName = "default"

// PolicyStatus is the status Calico's API server may report on a policy.
type PolicyStatus struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NetworkPolicy is a namespaced policy: its selectors match endpoints of its
// own namespace unless a rule says otherwise.
type NetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NetworkPolicySpec `json:"spec,omitempty"`
	Status            *PolicyStatus     `json:"status,omitempty"`
}

// NetworkPolicySpec is the body of a NetworkPolicy.
type NetworkPolicySpec struct {
	// Tier the policy belongs to; "default" when omitted.
	Tier string `json:"tier,omitempty"`
	// Order within the tier; lower first, unset last.
	Order   *float64 `json:"order,omitempty"`
	Ingress []Rule   `json:"ingress,omitempty"`
	Egress  []Rule   `json:"egress,omitempty"`
	// Selector picks the endpoints the policy applies to; empty is all().
	Selector               string                  `json:"selector,omitempty"`
	Types                  []PolicyType            `json:"types,omitempty"`
	ServiceAccountSelector string                  `json:"serviceAccountSelector,omitempty"`
	PerformanceHints       []PolicyPerformanceHint `json:"performanceHints,omitempty"`
}

// GlobalNetworkPolicy is a cluster-wide policy; it also applies to host
// endpoints.
type GlobalNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              GlobalNetworkPolicySpec `json:"spec,omitempty"`
	Status            *PolicyStatus           `json:"status,omitempty"`
}

// GlobalNetworkPolicySpec is the body of a GlobalNetworkPolicy.
type GlobalNetworkPolicySpec struct {
	Tier     string       `json:"tier,omitempty"`
	Order    *float64     `json:"order,omitempty"`
	Ingress  []Rule       `json:"ingress,omitempty"`
	Egress   []Rule       `json:"egress,omitempty"`
	Selector string       `json:"selector,omitempty"`
	Types    []PolicyType `json:"types,omitempty"`
	// DoNotTrack applies the rules before connection tracking, and allowed
	// packets are not tracked. Needs ApplyOnForward.
	DoNotTrack bool `json:"doNotTrack,omitempty"`
	// PreDNAT applies the (ingress) rules before DNAT. Needs ApplyOnForward.
	PreDNAT bool `json:"preDNAT,omitempty"`
	// ApplyOnForward applies the policy to forwarded traffic too.
	ApplyOnForward         bool                    `json:"applyOnForward,omitempty"`
	ServiceAccountSelector string                  `json:"serviceAccountSelector,omitempty"`
	NamespaceSelector      string                  `json:"namespaceSelector,omitempty"`
	PerformanceHints       []PolicyPerformanceHint `json:"performanceHints,omitempty"`
}

// StagedNetworkPolicy is a NetworkPolicy that is only reported on, never
// enforced.
type StagedNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              StagedNetworkPolicySpec `json:"spec,omitempty"`
}

// StagedNetworkPolicySpec is a NetworkPolicySpec plus the staged action.
type StagedNetworkPolicySpec struct {
	// StagedAction: Set (the default when empty), Delete, Learn or Ignore.
	StagedAction           StagedAction            `json:"stagedAction,omitempty"`
	Tier                   string                  `json:"tier,omitempty"`
	Order                  *float64                `json:"order,omitempty"`
	Ingress                []Rule                  `json:"ingress,omitempty"`
	Egress                 []Rule                  `json:"egress,omitempty"`
	Selector               string                  `json:"selector,omitempty"`
	Types                  []PolicyType            `json:"types,omitempty"`
	ServiceAccountSelector string                  `json:"serviceAccountSelector,omitempty"`
	PerformanceHints       []PolicyPerformanceHint `json:"performanceHints,omitempty"`
}

// StagedGlobalNetworkPolicy is a GlobalNetworkPolicy that is only reported
// on, never enforced.
type StagedGlobalNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              StagedGlobalNetworkPolicySpec `json:"spec,omitempty"`
}

// StagedGlobalNetworkPolicySpec is a GlobalNetworkPolicySpec plus the staged
// action.
type StagedGlobalNetworkPolicySpec struct {
	StagedAction           StagedAction            `json:"stagedAction,omitempty"`
	Tier                   string                  `json:"tier,omitempty"`
	Order                  *float64                `json:"order,omitempty"`
	Ingress                []Rule                  `json:"ingress,omitempty"`
	Egress                 []Rule                  `json:"egress,omitempty"`
	Selector               string                  `json:"selector,omitempty"`
	Types                  []PolicyType            `json:"types,omitempty"`
	DoNotTrack             bool                    `json:"doNotTrack,omitempty"`
	PreDNAT                bool                    `json:"preDNAT,omitempty"`
	ApplyOnForward         bool                    `json:"applyOnForward,omitempty"`
	ServiceAccountSelector string                  `json:"serviceAccountSelector,omitempty"`
	NamespaceSelector      string                  `json:"namespaceSelector,omitempty"`
	PerformanceHints       []PolicyPerformanceHint `json:"performanceHints,omitempty"`
}

// ---- defaulting ----

// defaultPolicyTypes is Calico's rule for an empty `types`: no egress rules
// (even with no rules at all) → [Ingress]; egress rules only → [Egress];
// both → [Ingress, Egress]. Explicit types are kept.
func defaultPolicyTypes(types []PolicyType, ingress, egress []Rule) []PolicyType {
	if len(types) > 0 {
		return types
	}
	switch {
	case len(egress) == 0:
		return []PolicyType{PolicyTypeIngress}
	case len(ingress) == 0:
		return []PolicyType{PolicyTypeEgress}
	default:
		return []PolicyType{PolicyTypeIngress, PolicyTypeEgress}
	}
}

func defaultTier(t string) string {
	if t == "" {
		return DefaultTierName
	}
	return t
}

func (np *NetworkPolicy) setDefaults() {
	np.Spec.Tier = defaultTier(np.Spec.Tier)
	np.Spec.Types = defaultPolicyTypes(np.Spec.Types, np.Spec.Ingress, np.Spec.Egress)
}

func (gnp *GlobalNetworkPolicy) setDefaults() {
	gnp.Spec.Tier = defaultTier(gnp.Spec.Tier)
	gnp.Spec.Types = defaultPolicyTypes(gnp.Spec.Types, gnp.Spec.Ingress, gnp.Spec.Egress)
}

// A staged Delete names the policy to delete and carries no rules, so its
// types are left alone.
func (s *StagedNetworkPolicy) setDefaults() {
	s.Spec.Tier = defaultTier(s.Spec.Tier)
	if s.Spec.StagedAction != StagedActionDelete {
		s.Spec.Types = defaultPolicyTypes(s.Spec.Types, s.Spec.Ingress, s.Spec.Egress)
	}
}

func (s *StagedGlobalNetworkPolicy) setDefaults() {
	s.Spec.Tier = defaultTier(s.Spec.Tier)
	if s.Spec.StagedAction != StagedActionDelete {
		s.Spec.Types = defaultPolicyTypes(s.Spec.Types, s.Spec.Ingress, s.Spec.Egress)
	}
}

// ---- validation ----

// policyView is the part of every policy kind that validation looks at.
type policyView struct {
	tier                   string
	order                  *float64
	ingress, egress        []Rule
	selector               string
	types                  []PolicyType
	serviceAccountSelector string
	hints                  []PolicyPerformanceHint
	global                 bool
	namespaceSelector      string
	doNotTrack, preDNAT    bool
	applyOnForward         bool
}

func (v *policyView) validate(spec Path) ErrorList {
	var errs ErrorList
	if v.tier != "" {
		errs = append(errs, validateTierName(spec.Child("tier"), v.tier)...)
	}
	errs = append(errs, validateOrder(spec.Child("order"), v.order)...)
	errs = append(errs, validateNonGlobalSelector(spec.Child("selector"), v.selector)...)
	errs = append(errs, validateNonGlobalSelector(spec.Child("serviceAccountSelector"), v.serviceAccountSelector)...)
	if v.global {
		errs = append(errs, validateNonGlobalSelector(spec.Child("namespaceSelector"), v.namespaceSelector)...)
	}
	seen := map[PolicyType]bool{}
	for i, t := range v.types {
		tp := spec.Child("types").Index(i)
		switch {
		case t != PolicyTypeIngress && t != PolicyTypeEgress:
			errs = append(errs, tp.Errorf("%q is not one of Ingress, Egress", t))
		case seen[t]:
			errs = append(errs, tp.Errorf("%q listed more than once", t))
		}
		seen[t] = true
	}
	errs = append(errs, validateRules(spec.Child("ingress"), v.ingress, ruleContext{dir: ingressRule, inPolicy: true, global: v.global})...)
	errs = append(errs, validateRules(spec.Child("egress"), v.egress, ruleContext{dir: egressRule, inPolicy: true, global: v.global})...)
	seenHint := map[PolicyPerformanceHint]bool{}
	for i, h := range v.hints {
		hp := spec.Child("performanceHints").Index(i)
		switch {
		case h != PerfHintAssumeNeededOnEveryNode:
			errs = append(errs, hp.Errorf("%q is not one of %s", h, PerfHintAssumeNeededOnEveryNode))
		case seenHint[h]:
			errs = append(errs, hp.Errorf("%q listed more than once", h))
		}
		seenHint[h] = true
	}
	if v.global {
		if v.doNotTrack && v.preDNAT {
			errs = append(errs, spec.Child("preDNAT").Errorf("preDNAT and doNotTrack cannot both be true"))
		}
		if v.preDNAT && len(v.egress) > 0 {
			errs = append(errs, spec.Child("egress").Errorf("a preDNAT policy cannot have egress rules"))
		}
		if v.preDNAT && seen[PolicyTypeEgress] {
			errs = append(errs, spec.Child("types").Errorf("a preDNAT policy cannot have type Egress"))
		}
		if (v.doNotTrack || v.preDNAT) && !v.applyOnForward {
			errs = append(errs, spec.Child("applyOnForward").Errorf("must be true when preDNAT or doNotTrack is true"))
		}
	}
	return errs
}

// validateStagedAction checks the action, and that a Delete carries nothing
// but the identity of the policy to delete (its tier and order).
func validateStagedAction(spec Path, a StagedAction, v *policyView) ErrorList {
	switch a {
	case "", StagedActionSet, StagedActionLearn, StagedActionIgnore:
		return nil
	case StagedActionDelete:
	default:
		return ErrorList{spec.Child("stagedAction").Errorf("%q is not one of Set, Delete, Learn, Ignore", a)}
	}
	var errs ErrorList
	forbid := func(name string, set bool) {
		if set {
			errs = append(errs, spec.Child(name).Errorf("must be empty when stagedAction is Delete"))
		}
	}
	forbid("ingress", len(v.ingress) > 0)
	forbid("egress", len(v.egress) > 0)
	forbid("selector", v.selector != "")
	forbid("serviceAccountSelector", v.serviceAccountSelector != "")
	forbid("namespaceSelector", v.namespaceSelector != "")
	forbid("doNotTrack", v.doNotTrack)
	forbid("preDNAT", v.preDNAT)
	forbid("applyOnForward", v.applyOnForward)
	return errs
}

// KubeClusterNetworkPolicyPrefix starts the name of a GlobalNetworkPolicy
// converted from a Kubernetes ClusterNetworkPolicy: "kcnp.<tier>.<name>".
const KubeClusterNetworkPolicyPrefix = "kcnp."

// validatePolicyName applies Calico's policy naming: a DNS label, or
// "<tier>.<label>" whose prefix is the policy's tier (the prefix was required
// for non-default tiers before Calico v3.32 and is still accepted; the
// default tier's policies may be "default.x" or "x"). A namespaced policy
// converted from Kubernetes may also be "knp.default.<subdomain>" (or
// "ossg.default.<subdomain>"), and a global one converted from a Kubernetes
// ClusterNetworkPolicy "kcnp.kube-admin.<subdomain>" or
// "kcnp.kube-baseline.<subdomain>" in that tier.
func validatePolicyName(p Path, name, tier string, namespaced bool) ErrorList {
	if name == "" {
		return ErrorList{p.Errorf("required")}
	}
	if len(name) > validation.DNS1123SubdomainMaxLength {
		return ErrorList{p.Errorf("%q is longer than %d characters", name, validation.DNS1123SubdomainMaxLength)}
	}
	tier = defaultTier(tier)
	prefixes := []string{"knp.default.", "ossg.default."}
	if !namespaced {
		prefixes = nil
		if tier == KubeAdminTierName || tier == KubeBaselineTierName {
			prefixes = []string{KubeClusterNetworkPolicyPrefix + tier + "."}
		}
	}
	for _, pre := range prefixes {
		if rest, ok := strings.CutPrefix(name, pre); ok {
			var errs ErrorList
			for _, msg := range validation.IsDNS1123Subdomain(rest) {
				errs = append(errs, p.Errorf("%q: %s", name, msg))
			}
			return errs
		}
	}
	label := name
	if prefix, rest, ok := strings.Cut(name, "."); ok {
		if prefix != tier {
			return ErrorList{p.Errorf("%q has tier prefix %q but the policy is in tier %q; use a plain name or the prefix %q", name, prefix, tier, tier+".")}
		}
		label = rest
	}
	var errs ErrorList
	for _, msg := range validation.IsDNS1123Label(label) {
		errs = append(errs, p.Errorf("%q: %s", name, msg))
	}
	return errs
}

func (np *NetworkPolicy) validateName(p Path) ErrorList {
	return validatePolicyName(p, np.Name, np.Spec.Tier, true)
}

func (gnp *GlobalNetworkPolicy) validateName(p Path) ErrorList {
	return validatePolicyName(p, gnp.Name, gnp.Spec.Tier, false)
}

func (s *StagedNetworkPolicy) validateName(p Path) ErrorList {
	return validatePolicyName(p, s.Name, s.Spec.Tier, true)
}

func (s *StagedGlobalNetworkPolicy) validateName(p Path) ErrorList {
	return validatePolicyName(p, s.Name, s.Spec.Tier, false)
}

func (s *NetworkPolicySpec) view() *policyView {
	return &policyView{
		tier: s.Tier, order: s.Order, ingress: s.Ingress, egress: s.Egress, selector: s.Selector,
		types: s.Types, serviceAccountSelector: s.ServiceAccountSelector, hints: s.PerformanceHints,
	}
}

func (s *GlobalNetworkPolicySpec) view() *policyView {
	return &policyView{
		tier: s.Tier, order: s.Order, ingress: s.Ingress, egress: s.Egress, selector: s.Selector,
		types: s.Types, serviceAccountSelector: s.ServiceAccountSelector, hints: s.PerformanceHints,
		global: true, namespaceSelector: s.NamespaceSelector,
		doNotTrack: s.DoNotTrack, preDNAT: s.PreDNAT, applyOnForward: s.ApplyOnForward,
	}
}

func (s *StagedNetworkPolicySpec) view() *policyView {
	return &policyView{
		tier: s.Tier, order: s.Order, ingress: s.Ingress, egress: s.Egress, selector: s.Selector,
		types: s.Types, serviceAccountSelector: s.ServiceAccountSelector, hints: s.PerformanceHints,
	}
}

func (s *StagedGlobalNetworkPolicySpec) view() *policyView {
	return &policyView{
		tier: s.Tier, order: s.Order, ingress: s.Ingress, egress: s.Egress, selector: s.Selector,
		types: s.Types, serviceAccountSelector: s.ServiceAccountSelector, hints: s.PerformanceHints,
		global: true, namespaceSelector: s.NamespaceSelector,
		doNotTrack: s.DoNotTrack, preDNAT: s.PreDNAT, applyOnForward: s.ApplyOnForward,
	}
}

func (np *NetworkPolicy) validate() ErrorList {
	return np.Spec.view().validate(Path("spec"))
}

func (gnp *GlobalNetworkPolicy) validate() ErrorList {
	return gnp.Spec.view().validate(Path("spec"))
}

func (s *StagedNetworkPolicy) validate() ErrorList {
	v := s.Spec.view()
	return append(validateStagedAction(Path("spec"), s.Spec.StagedAction, v), v.validate(Path("spec"))...)
}

func (s *StagedGlobalNetworkPolicy) validate() ErrorList {
	v := s.Spec.view()
	return append(validateStagedAction(Path("spec"), s.Spec.StagedAction, v), v.validate(Path("spec"))...)
}
