package k8s

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

const (
	// ProfileNamePrefix starts the name of a namespace's profile: "kns.<ns>".
	ProfileNamePrefix = "kns."
	// NamespaceLabelPrefix is prefixed to a namespace's labels when its
	// profile hands them to the namespace's endpoints.
	NamespaceLabelPrefix = "pcns."
	// NameLabel carries the namespace's name among those labels, so that a
	// namespaceSelector can match a namespace by name.
	NameLabel = "projectcalico.org/name"
)

// NamespaceToProfile converts a Namespace into Calico's namespace profile
// "kns.<name>": every namespace label is applied to the namespace's
// endpoints as "pcns.<key>" (that is what a rule's namespaceSelector is
// matched against), together with "pcns.projectcalico.org/name: <name>", and
// the profile allows all ingress and egress, so that an endpoint no policy
// selects is open, as in Kubernetes.
//
// As the API server does on create, the namespace first gets the label
// "kubernetes.io/metadata.name: <name>" (overwriting any other value), and a
// metadata.namespace on it is ignored. The input is not modified; the result
// has passed v3.SetDefaults and v3.Validate.
func NamespaceToProfile(in *corev1.Namespace) (*v3.Profile, error) {
	if in == nil {
		return nil, errors.New("nil Namespace")
	}
	ns := in.DeepCopy()
	defaultNamespaceObject(ns)
	if errs := apivalidation.ValidateObjectMeta(&ns.ObjectMeta, false, apivalidation.ValidateNamespaceName, field.NewPath("metadata")); len(errs) > 0 {
		return nil, fieldErrors(errs)
	}

	labels := make(map[string]string, len(ns.Labels)+1)
	for k, v := range ns.Labels {
		labels[NamespaceLabelPrefix+k] = v
	}
	labels[NamespaceLabelPrefix+NameLabel] = ns.Name

	out := &v3.Profile{
		TypeMeta:   metav1.TypeMeta{APIVersion: v3.APIVersion, Kind: v3.KindProfile},
		ObjectMeta: metav1.ObjectMeta{Name: ProfileNamePrefix + ns.Name},
		Spec: v3.ProfileSpec{
			Ingress:       []v3.Rule{{Action: v3.Allow}},
			Egress:        []v3.Rule{{Action: v3.Allow}},
			LabelsToApply: labels,
		},
	}
	v3.SetDefaults(out)
	if err := v3.Validate(out); err != nil {
		return nil, fmt.Errorf("Namespace %s converts to an invalid %s %s: %w", ns.Name, v3.KindProfile, out.Name, err)
	}
	return out, nil
}

// defaultNamespaceObject is what the API server does to a new Namespace:
// a cluster-scoped object's namespace is cleared and the name label is set.
func defaultNamespaceObject(ns *corev1.Namespace) {
	ns.Namespace = ""
	if ns.Name == "" {
		return
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[corev1.LabelMetadataName] = ns.Name
}
