package cni

import (
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Keys of Calico's network config that tortie reads only to decide what to
// do with them. Each decision follows what Calico's plugin does with the
// key (cni-plugin/pkg/plugin, pkg/k8s, internal/pkg/utils) and is written
// up in docs/cni-config.md:
//
//   - honoured as Calico does: hostname (the deprecated node name, after
//     the node name file); the Kubernetes API client (kubernetes.kubeconfig,
//     kubernetes.k8s_api_root, policy.k8s_api_root and the policy.k8s_*
//     credentials) with policy.type "k8s": see kube.go and kubepod.go;
//   - accepted, because in Calico too it changes nothing tortie does:
//     policy.type "k8s" without a client (tortie-node enforces policy for
//     every workload, and pods get their namespace's profile
//     kns.<namespace>), kubernetes.node_name (read only to look up the
//     node's podCIDR for host-local's "usePodCidr");
//   - refused, because tortie cannot do what Calico does with them and
//     going on would give the workload something else than Calico would:
//     another policy.type, a client without policy.type "k8s" (Calico then
//     gives pods the network's profile and no labels), container
//     forwarding, readiness gates, waiting for policy, another dataplane;
//     and etcd_discovery_srv, which would make tortie talk to another etcd.
//
// The refusals that concern only what ADD sets up (all but
// etcd_discovery_srv) apply to ADD, CHECK and STATUS (which says whether
// ADD would work); DEL and GC go on, as Calico's DEL uses none of them, so
// a conflist carried over never keeps a workload from being cleaned up.

// PolicyConf is Calico's "policy" section.
type PolicyConf struct {
	Type                    string `json:"type,omitempty"`
	K8sAPIRoot              string `json:"k8s_api_root,omitempty"`
	K8sAuthToken            string `json:"k8s_auth_token,omitempty"`
	K8sClientCertificate    string `json:"k8s_client_certificate,omitempty"`
	K8sClientKey            string `json:"k8s_client_key,omitempty"`
	K8sCertificateAuthority string `json:"k8s_certificate_authority,omitempty"`
}

// KubernetesConf is Calico's "kubernetes" section.
type KubernetesConf struct {
	K8sAPIRoot string `json:"k8s_api_root,omitempty"`
	Kubeconfig string `json:"kubeconfig,omitempty"`
	NodeName   string `json:"node_name,omitempty"`
}

// calicoOnly are the other keys of Calico's config tortie refuses when set.
type calicoOnly struct {
	EtcdDiscoverySrv  string `json:"etcd_discovery_srv,omitempty"`
	ContainerSettings struct {
		AllowIPForwarding bool `json:"allow_ip_forwarding,omitempty"`
	} `json:"container_settings,omitempty"`
	ReadinessGates            []string       `json:"readiness_gates,omitempty"`
	PolicySetupTimeoutSeconds int            `json:"policy_setup_timeout_seconds,omitempty"`
	DataplaneOptions          map[string]any `json:"dataplane_options,omitempty"`
}

// PolicyTypeK8s is the one policy.type tortie accepts.
const PolicyTypeK8s = "k8s"

// refusal is one key tortie will not act on as Calico does.
type refusal struct {
	key, value string
	why        string
	// always: refused for every command, not only ADD, CHECK and STATUS.
	always bool
}

func (r refusal) error() *types.Error {
	return newError(types.ErrUnsupportedField, fmt.Sprintf("%s set (%s): %s", r.key, r.value, r.why), nil)
}

// refusals lists the keys set in the config that tortie refuses in role r.
func (c *NetConf) refusals(r role) []refusal {
	var out []refusal
	add := func(set bool, key, value, why string, always bool) {
		if set {
			out = append(out, refusal{key, value, why, always})
		}
	}
	add(c.EtcdDiscoverySrv != "", "etcd_discovery_srv", c.EtcdDiscoverySrv,
		"tortie cannot find etcd by DNS SRV records, and would talk to another etcd; list the members in etcd_endpoints instead", true)
	if r != roleMain {
		return out
	}
	p := c.Policy
	if key, value := c.kubeClientKey(); key != "" && p.Type == "" {
		add(true, key, value,
			`without policy.type "k8s", Calico's plugin reads nothing from a pod and gives it the network's profile and no labels; tortie uses the Kubernetes API as Calico does with policy.type "k8s": add "policy": {"type": "k8s"}, or remove the key`, false)
	}
	add(p.Type != "" && p.Type != PolicyTypeK8s, "policy.type", fmt.Sprintf("%q", p.Type),
		`tortie knows only "k8s" (or no policy section): tortie-node enforces policy for every workload`, false)
	add(c.ContainerSettings.AllowIPForwarding, "container_settings.allow_ip_forwarding", "true",
		"tortie does not turn on IP forwarding inside the workload's namespace; remove the key, or set the sysctls in the workload", false)
	add(len(c.ReadinessGates) > 0, "readiness_gates", strings.Join(c.ReadinessGates, ", "),
		"tortie does not wait for readiness URLs before ADD returns; remove the key", false)
	add(c.PolicySetupTimeoutSeconds != 0, "policy_setup_timeout_seconds", fmt.Sprint(c.PolicySetupTimeoutSeconds),
		"tortie-node does not write the endpoint status files Calico's plugin waits for, so ADD cannot wait for policy; remove the key", false)
	add(len(c.DataplaneOptions) > 0, "dataplane_options", "an alternative dataplane",
		"tortie has one dataplane, the veth plumbing of Calico's Linux plugin; remove the key", false)
	return out
}

// kubeClientKey is the first Kubernetes client key set, and its value for
// a message (a token's is not shown); "" if none is.
func (c *NetConf) kubeClientKey() (key, value string) {
	k, p := c.Kubernetes, c.Policy
	for _, kv := range [][2]string{
		{"kubernetes.kubeconfig", k.Kubeconfig}, {"kubernetes.k8s_api_root", k.K8sAPIRoot}, {"policy.k8s_api_root", p.K8sAPIRoot},
		{"policy.k8s_auth_token", p.K8sAuthToken}, {"policy.k8s_client_certificate", p.K8sClientCertificate},
		{"policy.k8s_client_key", p.K8sClientKey}, {"policy.k8s_certificate_authority", p.K8sCertificateAuthority},
	} {
		if kv[1] != "" {
			if kv[0] == "policy.k8s_auth_token" {
				kv[1] = "value not shown"
			}
			return kv[0], kv[1]
		}
	}
	return "", ""
}

// checkCalicoKeys returns the first refusal that applies to cmd in role r;
// the refusals that do not apply to cmd are logged by the caller.
func (c *NetConf) checkCalicoKeys(r role, cmd string) (*types.Error, []refusal) {
	var skipped []refusal
	for _, rf := range c.refusals(r) {
		if rf.always || cmd == "ADD" || cmd == "CHECK" || cmd == "STATUS" {
			return rf.error(), nil
		}
		skipped = append(skipped, rf)
	}
	return nil, skipped
}
