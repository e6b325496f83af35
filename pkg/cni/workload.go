package cni

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

const (
	// HostVethPrefix starts every host-side workload interface, as Calico's.
	HostVethPrefix = "cali"
	// hostVethHashLen hex digits of sha1 follow it (15-character names).
	hostVethHashLen = 11

	// AnnotationNetwork marks the WorkloadEndpoints the plugin wrote with
	// the CNI network they belong to, so that GC of one network never
	// deletes another network's endpoints. Annotations play no part in
	// policy.
	AnnotationNetwork = "cni.tortie.dev/network"

	// CNI_ARGS keys the plugin understands.
	argPodNamespace = "K8S_POD_NAMESPACE"
	argPodName      = "K8S_POD_NAME"
	// argLabels carries labels of non-Kubernetes workloads in CNI_ARGS,
	// where ';' and '=' are taken: "LABELS=app:web,tier:db".
	argLabels = "LABELS"
	// argIP asks tortie's IPAM for exactly these addresses (at most one
	// per family, comma-separated), as Calico's IPAM plugin reads it: "IP=10.65.0.7".
	argIP = "IP"
)

// workload is who the interface is for.
type workload struct {
	orchestrator string // v3.OrchestratorKubernetes or v3.OrchestratorCNI
	namespace    string
	pod          string // Kubernetes only
	containerID  string
	endpoint     string // the interface in the container (CNI_IFNAME)
	labels       map[string]string
	// ipArg is CNI_ARGS IP, read by ADD only (requested).
	ipArg string

	// From the Kubernetes API (kubeMode): the pod's profiles (kns, ksa),
	// ports, service account and generateName.
	k8sProfiles    []string
	ports          []v3.WorkloadEndpointPort
	serviceAccount string
	generateName   string
}

// parseCNIArgs splits CNI_ARGS ("K=V;K=V").
func parseCNIArgs(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("CNI_ARGS element %q is not KEY=VALUE", pair)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

// requested reads CNI_ARGS IP: addresses, comma-separated, at most one
// IPv4 and one IPv6 (nil when not given).
func (w *workload) requested() ([]netip.Addr, error) {
	if w.ipArg == "" {
		return nil, nil
	}
	out, err := parseIPArg(w.ipArg)
	if err != nil {
		return nil, newError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS IP="+w.ipArg, err)
	}
	return out, nil
}

func parseIPArg(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	var fams [2]bool
	for _, f := range strings.Split(s, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address", strings.TrimSpace(f))
		}
		a = a.Unmap()
		i := 0
		if a.Is6() {
			i = 1
		}
		if fams[i] {
			return nil, fmt.Errorf("two addresses of one family; at most one IPv4 and one IPv6")
		}
		fams[i] = true
		out = append(out, a)
	}
	return out, nil
}

// identify works out the workload from CNI_ARGS and the config: a
// Kubernetes pod when K8S_POD_NAMESPACE and K8S_POD_NAME are present, else
// a plain container known by its ID (orchestrator "cni").
func identify(conf *NetConf, containerID, ifName, cniArgs string) (*workload, error) {
	args, err := parseCNIArgs(cniArgs)
	if err != nil {
		return nil, newError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS is malformed", err)
	}
	w := &workload{containerID: containerID, endpoint: ifName, labels: map[string]string{}}
	if ns, pod := args[argPodNamespace], args[argPodName]; ns != "" && pod != "" {
		w.orchestrator, w.namespace, w.pod = v3.OrchestratorKubernetes, ns, pod
	} else {
		w.orchestrator, w.namespace = v3.OrchestratorCNI, conf.WorkloadNamespace
	}

	w.ipArg = args[argIP]

	// Labels: CNI_ARGS first, then the structured forms, which win (the
	// conventions say a plugin that understands "args" ignores CNI_ARGS'
	// equivalent).
	if s := args[argLabels]; s != "" {
		for _, kv := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(kv, ":")
			if !ok || k == "" {
				return nil, newError(types.ErrInvalidEnvironmentVariables,
					fmt.Sprintf("CNI_ARGS LABELS element %q is not key:value (write LABELS=app:web,tier:db)", kv), nil)
			}
			w.labels[k] = v
		}
	}
	for _, kv := range conf.Args.CNI.Labels {
		w.labels[kv.Key] = kv.Value
	}
	if raw := conf.RuntimeConfig.Labels; len(raw) > 0 && string(raw) != "null" {
		var asMap map[string]string
		var asList []labelKV
		switch {
		case json.Unmarshal(raw, &asMap) == nil:
			maps.Copy(w.labels, asMap)
		case json.Unmarshal(raw, &asList) == nil:
			for _, kv := range asList {
				w.labels[kv.Key] = kv.Value
			}
		default:
			return nil, newError(types.ErrInvalidNetworkConfig,
				`runtimeConfig.labels must be {"key": "value", ...} or [{"key": .., "value": ..}, ...]`, nil)
		}
	}
	if errs := v3.ValidateLabels(v3.Path("labels"), w.labels); len(errs) > 0 {
		return nil, newError(types.ErrInvalidNetworkConfig, fmt.Sprintf("workload labels are not valid: %v", errs), nil)
	}
	return w, nil
}

// workloadID is the segment of the endpoint name that names the workload.
func (w *workload) workloadID() string {
	if w.orchestrator == v3.OrchestratorKubernetes {
		return w.pod
	}
	return w.containerID
}

// HostVethName is Calico's name for the host side of a workload's veth:
// "cali" and the first 11 hex digits of sha1 of "<namespace>.<pod>" for a
// pod, of the container ID otherwise. A second interface of one workload
// (an endpoint other than eth0, which Calico does not support) hashes
// "<id>.<endpoint>" so it gets a name of its own.
func HostVethName(orchestrator, namespace, pod, containerID, endpoint string) string {
	id := containerID
	if orchestrator == v3.OrchestratorKubernetes {
		id = namespace + "." + pod
	}
	if endpoint != "" && endpoint != "eth0" {
		id += "." + endpoint
	}
	sum := sha1.Sum([]byte(id))
	return HostVethPrefix + hex.EncodeToString(sum[:])[:hostVethHashLen]
}

func (w *workload) hostVeth() string {
	return HostVethName(w.orchestrator, w.namespace, w.pod, w.containerID, w.endpoint)
}

// HandleID is the IPAM handle of a container on a network, as Calico's.
func HandleID(network, containerID string) string {
	return network + "." + containerID
}

// endpointName is the WorkloadEndpoint's name.
func (w *workload) endpointName(node string) string {
	return v3.WorkloadEndpointName(node, w.orchestrator, w.workloadID(), w.endpoint)
}

// profiles: Kubernetes pods get, read from the API, their namespace's and
// service account's (kns.<ns>, ksa.<ns>.<sa>, which the controllers
// maintain), else their namespace's; other workloads the configured
// profiles or one named after the network.
func (w *workload) profiles(conf *NetConf) []string {
	if w.k8sProfiles != nil {
		return w.k8sProfiles
	}
	if w.orchestrator == v3.OrchestratorKubernetes {
		return []string{"kns." + w.namespace}
	}
	if len(conf.Profiles) > 0 {
		return conf.Profiles
	}
	return []string{conf.Name}
}

// ipamAttrs are stored with each allocated address (Calico's attributes).
func (w *workload) ipamAttrs(node string) map[string]string {
	attrs := map[string]string{"node": node, "namespace": w.namespace}
	if w.orchestrator == v3.OrchestratorKubernetes {
		attrs["pod"] = w.pod
	} else {
		attrs["containerID"] = w.containerID
	}
	return attrs
}
