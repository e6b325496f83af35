package v3

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Profile holds rules and labels that endpoints take on by listing the
// profile; its rules are evaluated after all tiers.
type Profile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ProfileSpec `json:"spec,omitempty"`
}

// ProfileSpec is the body of a Profile.
type ProfileSpec struct {
	Ingress []Rule `json:"ingress,omitempty"`
	Egress  []Rule `json:"egress,omitempty"`
	// LabelsToApply are added to each endpoint that lists the profile; the
	// endpoint's own labels win on a clash.
	LabelsToApply map[string]string `json:"labelsToApply,omitempty"`
}

func (pr *Profile) validate() ErrorList {
	spec := Path("spec")
	var errs ErrorList
	errs = append(errs, validateRules(spec.Child("ingress"), pr.Spec.Ingress, ruleContext{dir: ingressRule})...)
	errs = append(errs, validateRules(spec.Child("egress"), pr.Spec.Egress, ruleContext{dir: egressRule})...)
	errs = append(errs, ValidateLabels(spec.Child("labelsToApply"), pr.Spec.LabelsToApply)...)
	return errs
}
