// Package kubecontrollers is tortie-kube-controllers: Calico's
// kube-controllers in etcd mode. It keeps the Calico resources that stand
// for Kubernetes objects in step with them, in Calico's etcdv3 layout,
// byte for byte as Calico's own controllers write them:
//
//   - namespace: each Namespace is the Profile "kns.<name>";
//   - serviceaccount: each ServiceAccount is the Profile "ksa.<ns>.<name>";
//   - policy: each NetworkPolicy is the v3 NetworkPolicy
//     "knp.default.<name>" in its namespace;
//   - workloadendpoint: the WorkloadEndpoints the CNI plugin wrote for a
//     pod get the pod's labels, profiles, service account and ports, and
//     are removed a grace period after their pod is gone;
//   - node: a deleted Kubernetes Node's Calico Node goes, with its
//     endpoints, BGP peers, per-node configuration, block affinities and
//     addresses (Calico's IPAM garbage collection); an address whose pod is
//     gone is released after a grace period;
//   - clusternetworkpolicy (tortie's): each ClusterNetworkPolicy is the
//     GlobalNetworkPolicy "kcnp.kube-admin.<name>" or
//     "kcnp.kube-baseline.<name>"; without the CRD it waits for it.
//
// How it works. The desired state of each Calico object is a pure function
// of Kubernetes objects (desired.go, gc.go). Everything else is thin
// drivers: client-go shared informers for the Kubernetes side, one watch
// cache per Calico kind for the etcd side (store.go), and per controller
// one workqueue of keys (controller.go). An event on either side queues
// the key of what it affects; a worker reads both caches, computes what the
// stored object should be and writes the difference with compare-and-swap
// through pkg/client (writer.go), re-reading and deciding again on a
// conflict. Every ReconcileInterval, and at the start of each leadership
// term, every key of both sides is queued again (a full reconcile), so a
// missed event, an outage or a change made by hand converges. Only the
// elected leader (a coordination.k8s.io Lease) runs controllers; a leader
// that cannot renew stops writing and campaigns again, and each term starts
// from fresh caches.
//
// It must never write an object it does not own (Profiles named kns. and
// ksa., NetworkPolicies named knp.default., GlobalNetworkPolicies named
// kcnp.kube-admin. and kcnp.kube-baseline., the labels, profiles, service
// account and ports of a pod's WorkloadEndpoint, and what belongs to a
// Calico Node it deletes), never write without compare-and-swap, never
// act on a Kubernetes cache that has not synced, and never delete because
// a Kubernetes object is missing from a cache without the API server
// confirming it where a wrong delete would hurt (endpoints, nodes,
// addresses).
package kubecontrollers
