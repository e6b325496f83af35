package client

import (
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// DefaultAllowProfileName is the profile Calico's clients show without it
// being stored: it allows all ingress and egress, for endpoints that should
// be open in the absence of policy (a host endpoint listing it, say). It
// cannot be created, changed or deleted.
const DefaultAllowProfileName = "projectcalico-default-allow"

// DefaultAllowProfile returns the built-in profile as Calico's clients show
// it: no uid or creation time, resourceVersion "0".
func DefaultAllowProfile() *v3.Profile {
	k, _ := v3.KindByKind(v3.KindProfile)
	p := k.NewObject().(*v3.Profile)
	p.Name = DefaultAllowProfileName
	p.ResourceVersion = "0"
	p.Spec.Ingress = []v3.Rule{{Action: v3.Allow}}
	p.Spec.Egress = []v3.Rule{{Action: v3.Allow}}
	return p
}

func isDefaultAllow(k *v3.KindInfo, name string) bool {
	return k.Kind == v3.KindProfile && name == DefaultAllowProfileName
}

// defaultAllowWrite is Calico's answer (clientv3 profile.go) to a write of
// the built-in profile; nil for anything else.
func defaultAllowWrite(op Op, k *v3.KindInfo, name string) error {
	if !isDefaultAllow(k, name) {
		return nil
	}
	const reason = `The profile "` + DefaultAllowProfileName + `" is a default provided by Calico and cannot be `
	switch op {
	case OpCreate:
		return &calicoError{"resource already exists: " + DefaultAllowProfileName, datastore.ErrAlreadyExists}
	case OpDelete:
		return &calicoError{"operation Delete is not supported on " + DefaultAllowProfileName + ": " + reason + "deleted", ErrNotSupported}
	default: // apply and replace update what exists
		return &calicoError{"operation Update is not supported on " + DefaultAllowProfileName + ": " + reason + "updated", ErrNotSupported}
	}
}
