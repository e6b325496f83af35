package cni

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// The Kubernetes mode of ADD, as Calico's plugin with policy.type "k8s": the
// pod and its namespace are read from the API before anything is
// allocated; the endpoint takes the pod's labels, service account, ports
// and profiles (pkg/apis/k8s, which the controllers share); the pod's and
// namespace's annotations choose the addresses; once the endpoint is
// written, the pod is annotated with its addresses and container.

// Pod annotations Calico's plugin acts on that tortie does not implement:
// a pod carrying one is refused rather than given something else.
const (
	annotationFloatingIPs           = "cni.projectcalico.org/floatingIPs"
	annotationAllowedSourcePrefixes = "cni.projectcalico.org/allowedSourcePrefixes"
	// annotationIPFamilies: ["IPv4"], ["IPv6"] or both; which families the
	// pod gets (pod's wins over its namespace's).
	annotationIPFamilies = "cni.projectcalico.org/ipFamilies"
)

// podIPAM is what the pod's and namespace's annotations ask of IPAM.
type podIPAM struct {
	// addrs: cni.projectcalico.org/ipAddrs, exact addresses from IPAM.
	addrs []netip.Addr
	// pools4, pools6 replace ipam.ipv4_pools/ipv6_pools when set; from4,
	// from6 say which annotation of which object set them.
	pools4, pools6 []string
	from4, from6   string
	// families, when set, replaces assign_ipv4/assign_ipv6.
	families *[2]int
}

// kubeMode reports whether ADD and DEL use the Kubernetes API for this
// workload: a pod, a configured client and policy.type k8s.
func (p *invocation) kubeMode() bool {
	return p.wl.orchestrator == v3.OrchestratorKubernetes && p.conf.kubeConfigured() && p.conf.Policy.Type == PolicyTypeK8s
}

func (p *invocation) connectKube() error {
	if p.kube != nil {
		return nil
	}
	k, err := newKubeClient(p.conf)
	if err != nil {
		return err
	}
	p.kube = k
	return nil
}

// readPod reads the namespace and the pod and sets the workload from them.
// Nothing has been allocated yet: a failure here leaves nothing behind.
func (p *invocation) readPod() error {
	if err := p.connectKube(); err != nil {
		return err
	}
	w := p.wl
	ns, err := p.kube.getNamespace(p.ctx, w.namespace)
	if err != nil {
		return p.kubeError("reading Namespace "+w.namespace, err)
	}
	pod, err := p.kube.getPod(p.ctx, w.namespace, w.pod)
	if err != nil {
		return p.kubeError(fmt.Sprintf("reading Pod %s/%s", w.namespace, w.pod), err)
	}
	if len(w.labels) > 0 {
		p.log.Debug("labels from the runtime are replaced by the pod's (as Calico's plugin does)", "runtime", w.labels)
	}
	w.labels = k8s.PodEndpointLabels(pod)
	w.k8sProfiles = k8s.PodProfiles(pod)
	w.ports = k8s.PodPorts(pod)
	w.serviceAccount = pod.Spec.ServiceAccountName
	w.generateName = pod.GenerateName
	p.podUID = string(pod.UID)
	req, err := podIPAMRequest(pod, ns, p.usesTortieIPAM(), p.conf.IPAM.Type)
	if err != nil {
		return err
	}
	p.podReq = req
	p.log.Debug("pod read from the Kubernetes API", "labels", w.labels, "profiles", w.k8sProfiles, "ports", len(w.ports),
		"ipAddrs", req.addrs, "ipv4pools", req.pools4, "ipv6pools", req.pools6)
	return nil
}

// annotationError names the annotation and the object it is on.
func annotationError(obj, key, value, problem string) *types.Error {
	return newError(CodePodAnnotation, fmt.Sprintf("%s: annotation %s %q: %s", obj, key, value, problem), nil)
}

// podIPAMRequest reads the annotations that choose the pod's addresses, as
// Calico's plugin: ipAddrs (only with Calico's IPAM, tortie's here), the
// pools and families (pod's annotation, else the namespace's; with another
// IPAM plugin they are ignored, as by Calico), and refuses those tortie does
// not implement.
func podIPAMRequest(pod *corev1.Pod, ns *corev1.Namespace, tortieIPAM bool, ipamType string) (*podIPAM, error) {
	podName := "Pod " + pod.Namespace + "/" + pod.Name
	ann := pod.Annotations
	noIPAM, addrs := ann[k8s.AnnotationIPAddrsNoIPAM], ann[k8s.AnnotationIPAddrs]
	switch {
	case noIPAM != "" && addrs != "":
		return nil, newError(CodePodAnnotation, fmt.Sprintf("%s: annotations %s and %s cannot be used together (as in Calico)", podName, k8s.AnnotationIPAddrs, k8s.AnnotationIPAddrsNoIPAM), nil)
	case noIPAM != "":
		return nil, newError(types.ErrUnsupportedField, fmt.Sprintf("%s: annotation %s is set (%s): tortie does not give a pod addresses outside IPAM (Calico does only with feature_control.ip_addrs_no_ipam); use %s, which takes the exact addresses from IPAM",
			podName, k8s.AnnotationIPAddrsNoIPAM, noIPAM, k8s.AnnotationIPAddrs), nil)
	}
	if v := ann[annotationFloatingIPs]; v != "" {
		return nil, newError(types.ErrUnsupportedField, fmt.Sprintf("%s: annotation %s is set (%s): tortie-node does no 1:1 NAT of floating IPs (Calico does only with feature_control.floating_ips); remove the annotation",
			podName, annotationFloatingIPs, v), nil)
	}
	if v := ann[annotationAllowedSourcePrefixes]; v != "" {
		return nil, newError(types.ErrUnsupportedField, fmt.Sprintf("%s: annotation %s is set (%s): tortie-node does not let a workload send from other addresses than its own; remove the annotation",
			podName, annotationAllowedSourcePrefixes, v), nil)
	}

	req := &podIPAM{}
	if addrs != "" {
		if !tortieIPAM {
			return nil, newError(CodePodAnnotation, fmt.Sprintf("%s: annotation %s needs Calico's IPAM (ipam.type %s or %s), not %s (as in Calico)",
				podName, k8s.AnnotationIPAddrs, CalicoIPAMType, IPAMType, ipamType), nil)
		}
		list, err := parseAddrList(addrs)
		if err != nil {
			return nil, annotationError(podName, k8s.AnnotationIPAddrs, addrs, err.Error())
		}
		req.addrs = list
	}
	if !tortieIPAM {
		return req, nil
	}
	// The pod's annotation, else its namespace's.
	pick := func(key string) (string, string) {
		if v := ann[key]; v != "" {
			return v, podName
		}
		if v := ns.Annotations[key]; v != "" {
			return v, "Namespace " + ns.Name
		}
		return "", ""
	}
	for _, f := range []struct {
		key  string
		out  *[]string
		from *string
	}{{k8s.AnnotationIPv4Pools, &req.pools4, &req.from4}, {k8s.AnnotationIPv6Pools, &req.pools6, &req.from6}} {
		v, obj := pick(f.key)
		if v == "" {
			continue
		}
		var list []string
		if err := json.Unmarshal([]byte(v), &list); err != nil {
			return nil, annotationError(obj, f.key, v, `not a JSON list of IP pool names or CIDRs (write ["pool-a", "10.0.0.0/16"])`)
		}
		for _, e := range list {
			if strings.TrimSpace(e) == "" {
				return nil, annotationError(obj, f.key, v, "an empty entry (an entry is an IPPool's name or CIDR)")
			}
		}
		*f.out, *f.from = list, fmt.Sprintf("annotation %s of %s", f.key, obj)
	}
	if v, obj := pick(annotationIPFamilies); v != "" {
		var list []string
		if err := json.Unmarshal([]byte(v), &list); err != nil {
			return nil, annotationError(obj, annotationIPFamilies, v, `not a JSON list of "IPv4" and "IPv6"`)
		}
		fam := [2]int{}
		for _, f := range list {
			switch f {
			case "IPv4":
				fam[0] = 1
			case "IPv6":
				fam[1] = 1
			default:
				return nil, annotationError(obj, annotationIPFamilies, v, fmt.Sprintf("%q is neither IPv4 nor IPv6", f))
			}
		}
		req.families = &fam
	}
	return req, nil
}

// parseAddrList reads a JSON list of addresses: at most one IPv4 and one
// IPv6 (a CNI result has one of each), as Calico's plugin requires.
func parseAddrList(s string) ([]netip.Addr, error) {
	var list []string
	if err := json.Unmarshal([]byte(s), &list); err != nil {
		return nil, fmt.Errorf(`not a JSON list of IP addresses (write ["10.0.0.7", "fd00::7"])`)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("no address in the list")
	}
	var out []netip.Addr
	var n4, n6 int
	for _, e := range list {
		a, err := netip.ParseAddr(strings.TrimSpace(e))
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not an IP address", e)
		}
		a = a.Unmap()
		if a.Is4() {
			n4++
		} else {
			n6++
		}
		if n4 > 1 || n6 > 1 {
			return nil, fmt.Errorf("more than one IPv4 or IPv6 address (a pod has at most one of each)")
		}
		out = append(out, a)
	}
	return out, nil
}

// annotatePod writes the pod's address annotations once its endpoint is
// written: cni.projectcalico.org/podIP (the first address, a CIDR), podIPs
// (all, comma separated) and containerID, as Calico's plugin has them
// written (its Kubernetes datastore stores the endpoint so; with etcd,
// Calico leaves the pod alone, and tortie annotates it anyway: the
// controllers take a pod's addresses, and the moment it loses them, from
// these, and they appear long before the kubelet reports status.podIPs).
func (p *invocation) annotatePod(wep *v3.WorkloadEndpoint) error {
	ips := wep.Spec.IPNetworks
	ann := map[string]string{k8s.AnnotationContainerID: p.args.ContainerID, k8s.AnnotationPodIP: "", k8s.AnnotationPodIPs: strings.Join(ips, ",")}
	if len(ips) > 0 {
		ann[k8s.AnnotationPodIP] = ips[0]
	}
	if err := p.kube.patchPodAnnotations(p.ctx, p.wl.namespace, p.wl.pod, p.podUID, ann); err != nil {
		return p.kubeError(fmt.Sprintf("annotating Pod %s/%s with its addresses", p.wl.namespace, p.wl.pod), err)
	}
	p.log.Info("pod annotated", "podIPs", ann[k8s.AnnotationPodIPs])
	return nil
}

// clearPodAnnotations is DEL's part: the pod's podIP and podIPs annotations
// are emptied (the signal that it no longer has its addresses) if, and only
// if, its containerID annotation names this container; the containerID
// stays, so that a repeated DEL still knows, as in Calico. A pod that is
// gone, or was recreated meanwhile (another UID), is left alone.
func (p *invocation) clearPodAnnotations() error {
	if err := p.connectKube(); err != nil {
		return err
	}
	w := p.wl
	pod, err := p.kube.getPod(p.ctx, w.namespace, w.pod)
	if isKubeStatus(err, 404) {
		return nil
	}
	if err != nil {
		return p.kubeError(fmt.Sprintf("reading Pod %s/%s", w.namespace, w.pod), err)
	}
	ann := pod.Annotations
	if owner := ann[k8s.AnnotationContainerID]; owner != p.args.ContainerID {
		p.log.Info("pod's address annotations belong to another container; left alone", "owner", owner)
		return nil
	}
	if ann[k8s.AnnotationPodIP] == "" && ann[k8s.AnnotationPodIPs] == "" {
		return nil
	}
	err = p.kube.patchPodAnnotations(p.ctx, w.namespace, w.pod, string(pod.UID), map[string]string{k8s.AnnotationPodIP: "", k8s.AnnotationPodIPs: ""})
	switch {
	case isKubeStatus(err, 404), isKubeStatus(err, 409):
		return nil // deleted or recreated since it was read
	case err != nil:
		return p.kubeError(fmt.Sprintf("clearing the address annotations of Pod %s/%s", w.namespace, w.pod), err)
	}
	p.log.Info("pod's address annotations cleared")
	return nil
}
