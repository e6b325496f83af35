package client

import (
	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// ResourcePrefix is where Calico's etcdv3 datastore keeps v3 resources.
const ResourcePrefix = "/calico/resources/v3/projectcalico.org/"

// KindPrefix is the key prefix of every resource of a kind, or of one
// namespace's resources when ns is set and the kind is namespaced.
func KindPrefix(k *v3.KindInfo, ns string) string {
	p := ResourcePrefix + k.Plural + "/"
	if k.Namespaced && ns != "" {
		p += ns + "/"
	}
	return p
}

// Key is the etcd key of one resource, exactly as Calico writes it: the name
// segment is the name as given. A policy's tier prefix is part of its name,
// neither added nor stripped, so "default.x" and "x" are two policies, as
// they are to Calico's own clients.
func Key(k *v3.KindInfo, ns, name string) string {
	if k.Namespaced {
		return ResourcePrefix + k.Plural + "/" + ns + "/" + name
	}
	return ResourcePrefix + k.Plural + "/" + name
}

// isPolicyKind reports kinds that live in a tier.
func isPolicyKind(k *v3.KindInfo) bool {
	switch k.Kind {
	case v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy, v3.KindStagedNetworkPolicy, v3.KindStagedGlobalNetworkPolicy:
		return true
	}
	return false
}
