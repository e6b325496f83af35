package kubecontrollers

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
)

// The pure core: which Calico object a Kubernetes object stands for, and
// whether a stored object already says it. No I/O here.

// Controller names, as Calico's ENABLED_CONTROLLERS spells them.
const (
	ControllerNode             = "node"
	ControllerPolicy           = "policy"
	ControllerNamespace        = "namespace"
	ControllerServiceAccount   = "serviceaccount"
	ControllerWorkloadEndpoint = "workloadendpoint"
)

// AllControllers is every controller, in Calico's default order for etcd
// mode, then tortie's clusternetworkpolicy (clusternetworkpolicy.go).
var AllControllers = []string{ControllerNode, ControllerPolicy, ControllerNamespace, ControllerServiceAccount, ControllerWorkloadEndpoint, ControllerClusterNetworkPolicy}

// namespaceOfProfile returns the namespace whose profile is named name
// ("kns.<ns>"), or "" when name is not such a profile.
func namespaceOfProfile(name string) string {
	ns, ok := strings.CutPrefix(name, k8s.ProfileNamePrefix)
	if !ok {
		return ""
	}
	return ns
}

// serviceAccountOfProfile returns the "<ns>/<name>" key of the service
// account whose profile is named name ("ksa.<ns>.<name>"), or "". A
// namespace name is a DNS label and has no dot, so the first dot ends it
// (an account name may have dots).
func serviceAccountOfProfile(name string) string {
	rest, ok := strings.CutPrefix(name, k8s.ServiceAccountProfilePrefix)
	if !ok {
		return ""
	}
	ns, sa, ok := strings.Cut(rest, ".")
	if !ok || ns == "" || sa == "" {
		return ""
	}
	return ns + "/" + sa
}

// policyNameOf returns the Kubernetes NetworkPolicy name of a converted
// policy ("knp.default.<name>"), or "".
func policyNameOf(name string) string {
	np, ok := strings.CutPrefix(name, k8s.PolicyNamePrefix)
	if !ok {
		return ""
	}
	return np
}

// K8sNodeName is the name of the Kubernetes Node a Calico Node stands for:
// its orchestrator reference with orchestrator k8s, as Calico's node
// controller reads it; "" when it has none.
func K8sNodeName(n *v3.Node) string {
	for _, ref := range n.Spec.OrchRefs {
		if ref.Orchestrator == v3.OrchestratorKubernetes {
			return ref.NodeName
		}
	}
	return ""
}

// nodeKey is the node controller's key for a Calico Node: the Kubernetes
// Node it refers to, else its own name.
func nodeKey(n *v3.Node) string {
	if name := K8sNodeName(n); name != "" {
		return name
	}
	return n.Name
}

// NodeBelongsTo reports whether the Calico Node n stands for the
// Kubernetes Node k8sName: it says so in orchRefs, or (when it has no
// Kubernetes reference) it has that name and the deletion of a Kubernetes
// Node of that name was seen. A Calico Node with neither may be a host
// outside Kubernetes, and is never removed.
func NodeBelongsTo(n *v3.Node, k8sName string, deletionSeen bool) bool {
	if ref := K8sNodeName(n); ref != "" {
		return ref == k8sName
	}
	return deletionSeen && n.Name == k8sName
}

// EndpointForPod returns the pod's WorkloadEndpoint wep with what the pod
// says: its labels (k8s.PodEndpointLabels), profiles (k8s.PodProfiles),
// service account and ports (k8s.PodPorts). Everything else is the CNI
// plugin's and kept: addresses, interface, MAC, container, annotations.
// The addresses in particular are not taken from the pod's status: they
// are the ones IPAM allocated for the endpoint's container, and a status
// that lags behind a new sandbox would name the old ones.
//
// It returns nil when wep already says all of it, and the names of the
// fields that differ otherwise. wep is not modified.
func EndpointForPod(pod *corev1.Pod, wep *v3.WorkloadEndpoint) (*v3.WorkloadEndpoint, []string) {
	want := cloneEndpoint(wep)
	want.Labels = k8s.PodEndpointLabels(pod)
	want.Spec.Profiles = k8s.PodProfiles(pod)
	want.Spec.ServiceAccountName = pod.Spec.ServiceAccountName
	want.Spec.Ports = k8s.PodPorts(pod)
	var changed []string
	if !maps.Equal(want.Labels, wep.Labels) {
		changed = append(changed, "labels")
	}
	if !slices.Equal(want.Spec.Profiles, wep.Spec.Profiles) {
		changed = append(changed, "spec.profiles")
	}
	if want.Spec.ServiceAccountName != wep.Spec.ServiceAccountName {
		changed = append(changed, "spec.serviceAccountName")
	}
	if !jsonEqual(want.Spec.Ports, wep.Spec.Ports) {
		changed = append(changed, "spec.ports")
	}
	if len(changed) == 0 {
		return nil, nil
	}
	return want, changed
}

// Diff names what differs between a stored object and the one it should
// be, as a write's log line says it: "labels", "annotations", and each
// top-level field of spec ("spec.ingress"). Identity (uid,
// creationTimestamp, resourceVersion) is the datastore's and not compared;
// nor is the tier label pkg/client puts on every policy. nil: the same.
func Diff(want, cur v3.Resource) []string {
	var out []string
	if !maps.Equal(comparableLabels(want), comparableLabels(cur)) {
		out = append(out, "labels")
	}
	if !maps.Equal(want.GetAnnotations(), cur.GetAnnotations()) && !(len(want.GetAnnotations()) == 0 && len(cur.GetAnnotations()) == 0) {
		out = append(out, "annotations")
	}
	ws, cs := specFields(want), specFields(cur)
	keys := map[string]bool{}
	for k := range ws {
		keys[k] = true
	}
	for k := range cs {
		keys[k] = true
	}
	var fields []string
	for k := range keys {
		if !bytes.Equal(ws[k], cs[k]) {
			fields = append(fields, "spec."+k)
		}
	}
	sort.Strings(fields)
	return append(out, fields...)
}

func comparableLabels(r v3.Resource) map[string]string {
	l := r.GetLabels()
	if _, ok := l[client.TierLabel]; !ok {
		if len(l) == 0 {
			return nil
		}
		return l
	}
	if _, tiered := r.(v3.Tiered); !tiered {
		return l
	}
	l = maps.Clone(l)
	delete(l, client.TierLabel)
	if len(l) == 0 {
		return nil
	}
	return l
}

// specFields is the object's spec as JSON, field by field. Go's encoding
// is deterministic (struct order, sorted map keys), and nil and empty
// collections both vanish under omitempty, so equal bytes mean equal
// stored values.
func specFields(r v3.Resource) map[string]json.RawMessage {
	b, err := json.Marshal(r)
	if err != nil {
		return nil
	}
	var top struct {
		Spec map[string]json.RawMessage `json:"spec"`
	}
	if json.Unmarshal(b, &top) != nil {
		return nil
	}
	return top.Spec
}

func jsonEqual(a, b any) bool {
	ab, err1 := json.Marshal(a)
	bb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	if string(ab) == "null" {
		ab = []byte("[]")
	}
	if string(bb) == "null" {
		bb = []byte("[]")
	}
	return bytes.Equal(ab, bb)
}

// cloneEndpoint is a deep copy (the v3 types have no generated DeepCopy).
func cloneEndpoint(w *v3.WorkloadEndpoint) *v3.WorkloadEndpoint {
	b, err := json.Marshal(w)
	if err != nil {
		panic(err) // a decoded endpoint always encodes
	}
	out := &v3.WorkloadEndpoint{}
	if err := json.Unmarshal(b, out); err != nil {
		panic(err)
	}
	out.TypeMeta = w.TypeMeta
	out.ResourceVersion = w.ResourceVersion
	return out
}

// The kinds the controllers read and write.
var (
	kindProfile   = mustKind(v3.KindProfile)
	kindPolicy    = mustKind(v3.KindNetworkPolicy)
	kindWEP       = mustKind(v3.KindWorkloadEndpoint)
	kindNode      = mustKind(v3.KindNode)
	kindBGPPeer   = mustKind(v3.KindBGPPeer)
	kindFelixConf = mustKind(v3.KindFelixConfiguration)
	kindBGPConf   = mustKind(v3.KindBGPConfiguration)
)

func mustKind(kind string) *v3.KindInfo {
	k, ok := v3.KindByKind(kind)
	if !ok {
		panic("unknown kind " + kind)
	}
	return k
}
