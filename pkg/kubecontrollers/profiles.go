package kubecontrollers

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersnetworkingv1 "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// The three controllers whose Calico object is a pure conversion of one
// Kubernetes object: namespace (Profile kns.<ns>), serviceaccount (Profile
// ksa.<ns>.<sa>) and policy (NetworkPolicy knp.default.<np>). One
// mechanism serves all three: converted, keyed by the Kubernetes object's
// cache key, and read back from the etcd cache by the converted name.

// converter is what differs between them.
type converter struct {
	name string
	kind *v3.KindInfo
	// source returns the Kubernetes object of key (nil when it does not
	// exist).
	source func(key string) (any, error)
	// convert is the Calico object the source stands for.
	convert func(obj any) (v3.Resource, error)
	// target is the namespace and name of key's Calico object.
	target func(key string) (ns, name string)
	// keyOf is the key of a stored Calico object, "" when it is not one
	// this controller owns.
	keyOf func(r v3.Resource) string
	// sourceKeys lists every source object's key.
	sourceKeys func() []string
}

type conversionController struct {
	conv  converter
	store *store
	w     *writer
	log   *slog.Logger
}

func (c *conversionController) sync(ctx context.Context, key string) error {
	obj, err := c.conv.source(key)
	if err != nil {
		return err
	}
	ns, name := c.conv.target(key)
	if obj == nil {
		return c.w.apply(ctx, c.conv.kind, ns, name, c.store.get(ns, name), func(v3.Resource) (v3.Resource, bool, string) {
			return nil, true, c.conv.name + " " + key + " no longer exists"
		})
	}
	if _, err := c.conv.convert(obj); err != nil {
		// The API server accepted what the converter refuses: retrying
		// cannot help, and nothing stored is touched.
		c.log.Error("cannot convert; leaving the datastore as it is", "source", c.conv.name, "key", key, "error", err)
		return nil
	}
	why := "from " + c.conv.name + " " + key
	return c.w.apply(ctx, c.conv.kind, ns, name, c.store.get(ns, name), func(v3.Resource) (v3.Resource, bool, string) {
		// A fresh object each round: a write fills in identity and
		// defaults.
		want, _ := c.conv.convert(obj)
		return want, false, why
	})
}

func (c *conversionController) keys() []string {
	return unionKeys(c.conv.sourceKeys(), c.store, c.conv.keyOf)
}

func listerKeys[T any](list func(labels.Selector) ([]T, error)) func() []string {
	return func() []string {
		objs, err := list(labels.Everything())
		if err != nil {
			return nil
		}
		out := make([]string, 0, len(objs))
		for _, o := range objs {
			if k, err := cache.MetaNamespaceKeyFunc(o); err == nil {
				out = append(out, k)
			}
		}
		return out
	}
}

func notFoundNil[T any](obj T, err error) (any, error) {
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return obj, nil
}

func namespaceConverter(lister listerscorev1.NamespaceLister) converter {
	k, _ := v3.KindByKind(v3.KindProfile)
	return converter{
		name: "Namespace", kind: k,
		source:  func(key string) (any, error) { return notFoundNil(lister.Get(key)) },
		convert: func(o any) (v3.Resource, error) { return k8s.NamespaceToProfile(o.(*corev1.Namespace)) },
		target:  func(key string) (string, string) { return "", k8s.NamespaceProfileName(key) },
		keyOf: func(r v3.Resource) string {
			return namespaceOfProfile(r.GetName())
		},
		sourceKeys: listerKeys(lister.List),
	}
}

func serviceAccountConverter(lister listerscorev1.ServiceAccountLister) converter {
	k, _ := v3.KindByKind(v3.KindProfile)
	return converter{
		name: "ServiceAccount", kind: k,
		source: func(key string) (any, error) {
			ns, name, err := cache.SplitMetaNamespaceKey(key)
			if err != nil {
				return nil, err
			}
			return notFoundNil(lister.ServiceAccounts(ns).Get(name))
		},
		convert: func(o any) (v3.Resource, error) { return k8s.ServiceAccountToProfile(o.(*corev1.ServiceAccount)) },
		target: func(key string) (string, string) {
			ns, name, _ := cache.SplitMetaNamespaceKey(key)
			return "", k8s.ServiceAccountProfileName(ns, name)
		},
		keyOf:      func(r v3.Resource) string { return serviceAccountOfProfile(r.GetName()) },
		sourceKeys: listerKeys(lister.List),
	}
}

func policyConverter(lister listersnetworkingv1.NetworkPolicyLister) converter {
	k, _ := v3.KindByKind(v3.KindNetworkPolicy)
	return converter{
		name: "NetworkPolicy", kind: k,
		source: func(key string) (any, error) {
			ns, name, err := cache.SplitMetaNamespaceKey(key)
			if err != nil {
				return nil, err
			}
			return notFoundNil(lister.NetworkPolicies(ns).Get(name))
		},
		convert: func(o any) (v3.Resource, error) { return k8s.NetworkPolicyToV3(o.(*networkingv1.NetworkPolicy)) },
		target: func(key string) (string, string) {
			ns, name, _ := cache.SplitMetaNamespaceKey(key)
			return ns, k8s.PolicyNamePrefix + name
		},
		keyOf: func(r v3.Resource) string {
			if np := policyNameOf(r.GetName()); np != "" {
				return r.GetNamespace() + "/" + np
			}
			return ""
		},
		sourceKeys: listerKeys(lister.List),
	}
}

// objectKey is the cache key of an informer event's object, tombstones
// included.
func objectKey(obj any) (string, error) {
	k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return "", fmt.Errorf("no key for %T: %w", obj, err)
	}
	return k, nil
}
