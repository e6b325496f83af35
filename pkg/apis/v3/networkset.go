package v3

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NetworkSet is a namespaced, labelled set of networks that rule selectors
// can match like endpoints.
type NetworkSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NetworkSetSpec `json:"spec,omitempty"`
}

// NetworkSetSpec is the body of a NetworkSet.
type NetworkSetSpec struct {
	Nets []string `json:"nets,omitempty"`
}

// GlobalNetworkSet is the cluster-wide NetworkSet; rules reach it with a
// namespaceSelector of global() (or from a GlobalNetworkPolicy).
type GlobalNetworkSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              GlobalNetworkSetSpec `json:"spec,omitempty"`
}

// GlobalNetworkSetSpec is the body of a GlobalNetworkSet.
type GlobalNetworkSetSpec struct {
	Nets []string `json:"nets,omitempty"`
}

// namespaceLabel is set by the datastore on namespaced objects as they are
// handed to the dataplane; a network set may not carry it itself.
const namespaceLabel = "projectcalico.org/namespace"

// validateNetworkSet applies Calico's `cidr` rule to the nets: an address or
// a CIDR, host bits allowed (the set holds the masked network).
func validateNetworkSet(labels map[string]string, nets []string) ErrorList {
	var errs ErrorList
	if _, ok := labels[namespaceLabel]; ok {
		errs = append(errs, Path("metadata").Child("labels").Key(namespaceLabel).Errorf("reserved label; a network set may not set it"))
	}
	p := Path("spec").Child("nets")
	for i, n := range nets {
		if _, fe := ParseNet(p.Index(i), n); fe != nil {
			errs = append(errs, fe)
		}
	}
	return errs
}

func (ns *NetworkSet) validate() ErrorList { return validateNetworkSet(ns.Labels, ns.Spec.Nets) }

func (gns *GlobalNetworkSet) validate() ErrorList {
	return validateNetworkSet(gns.Labels, gns.Spec.Nets)
}
