package v3

import (
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StagedKubernetesNetworkPolicy is a Kubernetes NetworkPolicy that is only
// reported on, never enforced: what the policy of the same name would do
// (stagedAction Set) or what removing it would do (Delete), as Calico
// stores it. Its spec is a Kubernetes NetworkPolicy's, plus the action.
type StagedKubernetesNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              StagedKubernetesNetworkPolicySpec `json:"spec,omitempty"`
}

// StagedKubernetesNetworkPolicySpec is a NetworkPolicySpec of
// networking.k8s.io/v1 plus the staged action.
type StagedKubernetesNetworkPolicySpec struct {
	// StagedAction: Set (the default when empty), Delete, Learn or Ignore.
	StagedAction StagedAction                            `json:"stagedAction,omitempty"`
	PodSelector  metav1.LabelSelector                    `json:"podSelector"`
	Ingress      []networkingv1.NetworkPolicyIngressRule `json:"ingress,omitempty"`
	Egress       []networkingv1.NetworkPolicyEgressRule  `json:"egress,omitempty"`
	PolicyTypes  []networkingv1.PolicyType               `json:"policyTypes,omitempty"`
}

// validate checks the staged action (a Delete names the policy and carries
// no rules) and the pod selector. The rules are checked as the Kubernetes
// API server checks a NetworkPolicy when the policy is read for what it
// would do (pkg/apis/k8s converts it as Calico does).
func (s *StagedKubernetesNetworkPolicy) validate() ErrorList {
	spec := Path("spec")
	var errs ErrorList
	switch s.Spec.StagedAction {
	case "", StagedActionSet, StagedActionLearn, StagedActionIgnore:
	case StagedActionDelete:
		if len(s.Spec.Ingress) > 0 {
			errs = append(errs, spec.Child("ingress").Errorf("must be empty when stagedAction is Delete"))
		}
		if len(s.Spec.Egress) > 0 {
			errs = append(errs, spec.Child("egress").Errorf("must be empty when stagedAction is Delete"))
		}
	default:
		errs = append(errs, spec.Child("stagedAction").Errorf("%q is not one of Set, Delete, Learn, Ignore", s.Spec.StagedAction))
	}
	if _, err := metav1.LabelSelectorAsSelector(&s.Spec.PodSelector); err != nil {
		errs = append(errs, spec.Child("podSelector").Errorf("%v", err))
	}
	for i, t := range s.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			errs = append(errs, spec.Child("policyTypes").Index(i).Errorf("%q is not Ingress or Egress", t))
		}
	}
	return errs
}
