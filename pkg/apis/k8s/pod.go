package k8s

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
)

// What a pod's WorkloadEndpoint looks like, as Calico's Kubernetes converter
// (libcalico-go) and its CNI plugin make it. The CNI plugin builds the
// endpoint from these on ADD, and the controllers keep it in step with the
// pod afterwards, so both say the same thing.

const (
	// ServiceAccountProfilePrefix starts the name of a service account's
	// profile: "ksa.<namespace>.<name>".
	ServiceAccountProfilePrefix = "ksa."
	// ServiceAccountLabelPrefix is prefixed to a service account's labels
	// when its profile hands them to the account's endpoints.
	ServiceAccountLabelPrefix = "pcsa."

	// LabelServiceAccount carries a pod's service account on its endpoint.
	LabelServiceAccount = "projectcalico.org/serviceaccount"
	// maxServiceAccountLabel: Calico sets LabelServiceAccount only for a
	// name shorter than this (a label value is at most 63 characters).
	maxServiceAccountLabel = 63

	// PodEndpointInterface is the endpoint (and in-pod interface) name of a
	// Kubernetes pod's WorkloadEndpoint.
	PodEndpointInterface = "eth0"
)

// The pod annotations Calico's CNI plugin reads and writes.
const (
	// AnnotationPodIP is the pod's first address as a CIDR ("10.0.0.5/32"),
	// written by the CNI plugin on ADD and set to "" on DEL.
	AnnotationPodIP = "cni.projectcalico.org/podIP"
	// AnnotationPodIPs is all of the pod's addresses, comma separated CIDRs.
	AnnotationPodIPs = "cni.projectcalico.org/podIPs"
	// AnnotationContainerID is the sandbox the addresses belong to; DEL
	// clears the address annotations only for this container.
	AnnotationContainerID = "cni.projectcalico.org/containerID"
	// AnnotationIPAddrs is a JSON list of exact addresses to assign from
	// IPAM, e.g. ["10.0.0.7"].
	AnnotationIPAddrs = "cni.projectcalico.org/ipAddrs"
	// AnnotationIPAddrsNoIPAM is a JSON list of addresses to use without
	// IPAM. Calico honours it only with feature_control.ip_addrs_no_ipam;
	// tortie does not implement it.
	AnnotationIPAddrsNoIPAM = "cni.projectcalico.org/ipAddrsNoIpam"
	// AnnotationIPv4Pools and AnnotationIPv6Pools are JSON lists of IP pool
	// names or CIDRs to assign from; on a pod they win over its namespace's.
	AnnotationIPv4Pools = "cni.projectcalico.org/ipv4pools"
	AnnotationIPv6Pools = "cni.projectcalico.org/ipv6pools"
)

// podCompleted is a phase Calico also takes as finished, although the API
// does not define it.
const podCompleted corev1.PodPhase = "Completed"

// NamespaceProfileName is the name of a namespace's profile: "kns.<ns>".
func NamespaceProfileName(namespace string) string {
	return ProfileNamePrefix + namespace
}

// ServiceAccountProfileName is the name of a service account's profile:
// "ksa.<namespace>.<name>".
func ServiceAccountProfileName(namespace, name string) string {
	return ServiceAccountProfilePrefix + namespace + "." + name
}

// PodEndpointName is the name of the pod's WorkloadEndpoint on node for the
// in-pod interface iface: "<node>-k8s-<pod>-<iface>", each part with its
// '-' doubled.
func PodEndpointName(node, pod, iface string) string {
	return v3.WorkloadEndpointName(node, v3.OrchestratorKubernetes, pod, iface)
}

// PodEndpointLabels returns the labels of the pod's WorkloadEndpoint: the
// pod's own labels, then "projectcalico.org/namespace: <ns>",
// "projectcalico.org/orchestrator: k8s" and, for a service account name
// shorter than 63 characters, "projectcalico.org/serviceaccount: <sa>".
// Those three are set last, so, as in Calico, a pod label of the same key is
// overwritten (a pod cannot claim another namespace). A pod with an empty
// service account name has no serviceaccount label, even if it set one
// itself. The pod is not modified.
func PodEndpointLabels(pod *corev1.Pod) map[string]string {
	labels := make(map[string]string, len(pod.Labels)+3)
	maps.Copy(labels, pod.Labels)
	labels[v3.LabelNamespace] = pod.Namespace
	labels[v3.LabelOrchestrator] = v3.OrchestratorKubernetes
	if sa := pod.Spec.ServiceAccountName; sa != "" && len(sa) < maxServiceAccountLabel {
		labels[LabelServiceAccount] = sa
	}
	return labels
}

// PodProfiles returns the profiles of the pod's WorkloadEndpoint, in
// Calico's order: the namespace's "kns.<ns>", then, when the pod has a
// service account, "ksa.<ns>.<sa>".
func PodProfiles(pod *corev1.Pod) []string {
	profiles := []string{NamespaceProfileName(pod.Namespace)}
	if sa := pod.Spec.ServiceAccountName; sa != "" {
		profiles = append(profiles, ServiceAccountProfileName(pod.Namespace, sa))
	}
	return profiles
}

// PodPorts returns the ports of the pod's WorkloadEndpoint as Calico's
// converter does: every port of the containers, then of the init
// containers, with a container port and either a name or a host port; the
// protocol in lower case ("tcp" when unset); a port with a protocol other
// than TCP, UDP or SCTP is skipped. nil if there are none.
func PodPorts(pod *corev1.Pod) []v3.WorkloadEndpointPort {
	var out []v3.WorkloadEndpointPort
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range list {
			for _, p := range c.Ports {
				if p.ContainerPort == 0 || (p.Name == "" && p.HostPort == 0) {
					continue
				}
				var proto string
				switch p.Protocol {
				case corev1.ProtocolTCP, "":
					proto = "tcp"
				case corev1.ProtocolUDP:
					proto = "udp"
				case corev1.ProtocolSCTP:
					proto = "sctp"
				default:
					continue
				}
				out = append(out, v3.WorkloadEndpointPort{
					Name:     p.Name,
					Protocol: numorstring.ProtocolFromString(proto),
					Port:     uint16(p.ContainerPort),
					HostPort: uint16(p.HostPort),
					HostIP:   p.HostIP,
				})
			}
		}
	}
	return out
}

// PodIPs returns the pod's addresses as CIDRs ("10.0.0.5/32"), from the
// first of these that is set, as Calico's converter: status.podIPs,
// status.podIP, the annotation cni.projectcalico.org/podIPs (comma
// separated), cni.projectcalico.org/podIP. Each is an address or a CIDR; a
// bare address becomes a /32 or /128. nil if the pod has none; an error
// naming the field or annotation if one does not parse.
func PodIPs(pod *corev1.Pod) ([]string, error) {
	var from string
	var ips []string
	switch {
	case len(pod.Status.PodIPs) > 0:
		from = "status.podIPs"
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
	case pod.Status.PodIP != "":
		from, ips = "status.podIP", []string{pod.Status.PodIP}
	case pod.Annotations[AnnotationPodIPs] != "":
		from, ips = "annotation "+AnnotationPodIPs, strings.Split(pod.Annotations[AnnotationPodIPs], ",")
	case pod.Annotations[AnnotationPodIP] != "":
		from, ips = "annotation "+AnnotationPodIP, []string{pod.Annotations[AnnotationPodIP]}
	default:
		return nil, nil
	}
	out := make([]string, 0, len(ips))
	for _, s := range ips {
		p, err := ParseCIDROrIP(s)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %s: %w", pod.Namespace, pod.Name, from, err)
		}
		out = append(out, p.String())
	}
	return out, nil
}

// ParseCIDROrIP parses "10.0.0.5/32", "fd00::5/128" or a bare address (which
// becomes a /32 or /128). A CIDR is returned masked to its network, as
// Calico does.
func ParseCIDROrIP(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// IsPodFinished reports whether the pod no longer owns its addresses, so
// that its endpoint must have none, as Calico decides it: its phase is
// Succeeded, Failed (or the undefined "Completed"), or it is being deleted
// and the CNI plugin has already emptied its podIP annotation.
func IsPodFinished(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil {
		if ip, ok := pod.Annotations[AnnotationPodIP]; ok && ip == "" {
			return true
		}
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed, podCompleted:
		return true
	}
	return false
}

// IsPodHostNetworked reports whether the pod uses its node's network
// namespace: such a pod gets no CNI call and has no WorkloadEndpoint.
func IsPodHostNetworked(pod *corev1.Pod) bool {
	return pod.Spec.HostNetwork
}

// IsPodScheduled reports whether the pod has been bound to a node; an
// unscheduled pod has no WorkloadEndpoint.
func IsPodScheduled(pod *corev1.Pod) bool {
	return pod.Spec.NodeName != ""
}

// PodHasEndpoint reports whether Calico would show the pod as a
// WorkloadEndpoint: it is scheduled and not host-networked. (A finished
// pod's endpoint remains, without addresses; see IsPodFinished.)
func PodHasEndpoint(pod *corev1.Pod) bool {
	return IsPodScheduled(pod) && !IsPodHostNetworked(pod)
}

// ServiceAccountToProfile converts a ServiceAccount into Calico's service
// account profile "ksa.<namespace>.<name>": every label of the account is
// applied to its pods' endpoints as "pcsa.<key>" (what a rule's
// serviceAccountSelector is matched against), together with
// "pcsa.projectcalico.org/name: <name>". The profile has no rules: the
// namespace's profile, listed first, already allows all.
//
// The account must have a name and a namespace that the API server would
// accept. The input is not modified; the result has passed v3.SetDefaults
// and v3.Validate.
func ServiceAccountToProfile(in *corev1.ServiceAccount) (*v3.Profile, error) {
	if in == nil {
		return nil, errors.New("nil ServiceAccount")
	}
	if errs := apivalidation.ValidateObjectMeta(&in.ObjectMeta, true, apivalidation.ValidateServiceAccountName, field.NewPath("metadata")); len(errs) > 0 {
		return nil, fieldErrors(errs)
	}
	labels := make(map[string]string, len(in.Labels)+1)
	for k, v := range in.Labels {
		labels[ServiceAccountLabelPrefix+k] = v
	}
	labels[ServiceAccountLabelPrefix+NameLabel] = in.Name

	out := &v3.Profile{
		TypeMeta:   metav1.TypeMeta{APIVersion: v3.APIVersion, Kind: v3.KindProfile},
		ObjectMeta: metav1.ObjectMeta{Name: ServiceAccountProfileName(in.Namespace, in.Name)},
		Spec:       v3.ProfileSpec{LabelsToApply: labels},
	}
	v3.SetDefaults(out)
	if err := v3.Validate(out); err != nil {
		return nil, fmt.Errorf("ServiceAccount %s/%s converts to an invalid %s %s: %w", in.Namespace, in.Name, v3.KindProfile, out.Name, err)
	}
	return out, nil
}
