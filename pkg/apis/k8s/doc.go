// Package k8s lets tortie take Kubernetes network policy manifests without a
// Kubernetes cluster: it decodes networking.k8s.io/v1 NetworkPolicy and v1
// Namespace documents and converts them into the projectcalico.org/v3
// resources that a Kubernetes cluster running Calico would enforce.
//
// Each conversion runs in three steps, so that what tortie enforces is what a
// cluster would:
//
//  1. what the Kubernetes API server does before it stores the object:
//     defaulting (policyTypes, port protocol, the namespace name label) and
//     validation (a manifest the API server would refuse is refused here, with
//     the same field paths);
//  2. Calico's own conversion (libcalico-go's Kubernetes converter): a
//     NetworkPolicy becomes the namespaced v3 NetworkPolicy
//     "knp.default.<name>" in tier default at order 1000, a Namespace becomes
//     the Profile "kns.<name>";
//  3. tortie's v3 defaulting and validation, so a converted object is always
//     one the datastore accepts.
//
// The package is pure: no I/O.
package k8s
