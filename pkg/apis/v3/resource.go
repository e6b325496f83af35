package v3

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	// Group is the API group of every tortie (Calico) resource.
	Group = "projectcalico.org"
	// APIVersion is the apiVersion every document must carry.
	APIVersion = Group + "/v3"
)

// Resource is any v3 object. Every kind's struct embeds metav1.TypeMeta and
// metav1.ObjectMeta, whose promoted methods satisfy this interface, so kinds
// need no boilerplate of their own.
type Resource interface {
	metav1.Object
	GetObjectKind() schema.ObjectKind
}

// KindInfo describes one kind: its names on the command line, its etcd key
// segment and how to make an empty one.
type KindInfo struct {
	Kind       string // as in a manifest: "IPPool"
	Plural     string // lower-case plural; the etcd key segment: "ippools"
	Namespaced bool
	// Names are what the CLI accepts, lower case: singular, plural and
	// calicoctl's short aliases.
	Names []string
	New   func() Resource
}

// NewObject returns an empty resource of this kind with its TypeMeta set.
func (k *KindInfo) NewObject() Resource {
	r := k.New()
	r.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{Group: Group, Version: "v3", Kind: k.Kind})
	return r
}

// kinds is every kind tortie knows, in the order `tortie get all` lists them.
var kinds = []*KindInfo{
	{Kind: KindIPPool, Plural: "ippools", Names: []string{"ippool", "ippools", "ipp", "ipps", "pool", "pools"}, New: func() Resource { return &IPPool{} }},
	{Kind: KindIPReservation, Plural: "ipreservations", Names: []string{"ipreservation", "ipreservations", "ipr", "iprs"}, New: func() Resource { return &IPReservation{} }},
	{Kind: KindBGPConfiguration, Plural: "bgpconfigurations", Names: []string{"bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"}, New: func() Resource { return &BGPConfiguration{} }},
	{Kind: KindBGPPeer, Plural: "bgppeers", Names: []string{"bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"}, New: func() Resource { return &BGPPeer{} }},
	{Kind: KindBGPFilter, Plural: "bgpfilters", Names: []string{"bgpfilter", "bgpfilters"}, New: func() Resource { return &BGPFilter{} }},
	{Kind: KindNode, Plural: "nodes", Names: []string{"node", "nodes", "no", "nos"}, New: func() Resource { return &Node{} }},
	{Kind: KindWorkloadEndpoint, Plural: "workloadendpoints", Namespaced: true, Names: []string{"workloadendpoint", "workloadendpoints", "wep", "weps"}, New: func() Resource { return &WorkloadEndpoint{} }},
	{Kind: KindHostEndpoint, Plural: "hostendpoints", Names: []string{"hostendpoint", "hostendpoints", "hep", "heps"}, New: func() Resource { return &HostEndpoint{} }},
	{Kind: KindTier, Plural: "tiers", Names: []string{"tier", "tiers"}, New: func() Resource { return &Tier{} }},
	{Kind: KindNetworkPolicy, Plural: "networkpolicies", Namespaced: true, Names: []string{"networkpolicy", "networkpolicies", "policy", "policies", "pol", "pols", "np", "nps"}, New: func() Resource { return &NetworkPolicy{} }},
	{Kind: KindGlobalNetworkPolicy, Plural: "globalnetworkpolicies", Names: []string{"globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"}, New: func() Resource { return &GlobalNetworkPolicy{} }},
	{Kind: KindStagedNetworkPolicy, Plural: "stagednetworkpolicies", Namespaced: true, Names: []string{"stagednetworkpolicy", "stagednetworkpolicies", "snp", "snps"}, New: func() Resource { return &StagedNetworkPolicy{} }},
	{Kind: KindStagedGlobalNetworkPolicy, Plural: "stagedglobalnetworkpolicies", Names: []string{"stagedglobalnetworkpolicy", "stagedglobalnetworkpolicies", "sgnp", "sgnps"}, New: func() Resource { return &StagedGlobalNetworkPolicy{} }},
	{Kind: KindStagedKubernetesNetworkPolicy, Plural: "stagedkubernetesnetworkpolicies", Namespaced: true, Names: []string{"stagedkubernetesnetworkpolicy", "stagedkubernetesnetworkpolicies", "sknp", "sknps"}, New: func() Resource { return &StagedKubernetesNetworkPolicy{} }},
	{Kind: KindNetworkSet, Plural: "networksets", Namespaced: true, Names: []string{"networkset", "networksets", "netset", "netsets"}, New: func() Resource { return &NetworkSet{} }},
	{Kind: KindGlobalNetworkSet, Plural: "globalnetworksets", Names: []string{"globalnetworkset", "globalnetworksets", "gnetset", "gnetsets"}, New: func() Resource { return &GlobalNetworkSet{} }},
	{Kind: KindProfile, Plural: "profiles", Names: []string{"profile", "profiles", "pro", "pros"}, New: func() Resource { return &Profile{} }},
	{Kind: KindFelixConfiguration, Plural: "felixconfigurations", Names: []string{"felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"}, New: func() Resource { return &FelixConfiguration{} }},
	{Kind: KindKubeControllersConfiguration, Plural: "kubecontrollersconfigurations", Names: []string{"kubecontrollersconfiguration", "kubecontrollersconfigurations"}, New: func() Resource { return &KubeControllersConfiguration{} }},
	{Kind: KindClusterInformation, Plural: "clusterinformations", Names: []string{"clusterinformation", "clusterinformations", "clusterinfo", "clusterinfos"}, New: func() Resource { return &ClusterInformation{} }},
	{Kind: KindIPAMConfiguration, Plural: "ipamconfigurations", Names: []string{"ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"}, New: func() Resource { return &IPAMConfiguration{} }},
}

var (
	byKind = map[string]*KindInfo{}
	byName = map[string]*KindInfo{}
)

func init() {
	for _, k := range kinds {
		if byKind[k.Kind] != nil {
			panic("v3: kind registered twice: " + k.Kind)
		}
		byKind[k.Kind] = k
		for _, n := range append([]string{strings.ToLower(k.Kind)}, k.Names...) {
			if other := byName[n]; other != nil && other != k {
				panic(fmt.Sprintf("v3: name %q used by %s and %s", n, other.Kind, k.Kind))
			}
			byName[n] = k
		}
	}
}

// Kinds lists every kind in display order.
func Kinds() []*KindInfo { return kinds }

// KindByKind finds a kind by its manifest name ("IPPool"), exactly.
func KindByKind(kind string) (*KindInfo, bool) {
	k, ok := byKind[kind]
	return k, ok
}

// LookupKind finds a kind by any name the CLI accepts, case-insensitively.
func LookupKind(name string) (*KindInfo, error) {
	if k, ok := byName[strings.ToLower(name)]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("unknown resource type %q (known: %s)", name, strings.Join(kindNames(), ", "))
}

// KindOf returns the KindInfo of a decoded resource.
func KindOf(r Resource) *KindInfo {
	return byKind[r.GetObjectKind().GroupVersionKind().Kind]
}

func kindNames() []string {
	var out []string
	for _, k := range kinds {
		out = append(out, k.Names[0])
	}
	sort.Strings(out)
	return out
}

// Kind names, as they appear in manifests.
const (
	KindIPPool                        = "IPPool"
	KindIPReservation                 = "IPReservation"
	KindBGPConfiguration              = "BGPConfiguration"
	KindBGPPeer                       = "BGPPeer"
	KindBGPFilter                     = "BGPFilter"
	KindNode                          = "Node"
	KindWorkloadEndpoint              = "WorkloadEndpoint"
	KindHostEndpoint                  = "HostEndpoint"
	KindTier                          = "Tier"
	KindNetworkPolicy                 = "NetworkPolicy"
	KindGlobalNetworkPolicy           = "GlobalNetworkPolicy"
	KindStagedNetworkPolicy           = "StagedNetworkPolicy"
	KindStagedGlobalNetworkPolicy     = "StagedGlobalNetworkPolicy"
	KindStagedKubernetesNetworkPolicy = "StagedKubernetesNetworkPolicy"
	KindNetworkSet                    = "NetworkSet"
	KindGlobalNetworkSet              = "GlobalNetworkSet"
	KindProfile                       = "Profile"
	KindFelixConfiguration            = "FelixConfiguration"
	KindKubeControllersConfiguration  = "KubeControllersConfiguration"
	KindClusterInformation            = "ClusterInformation"
	KindIPAMConfiguration             = "IPAMConfiguration"
)

// Tiered is implemented by the policy kinds, which live in a tier.
type Tiered interface {
	Resource
	PolicyTier() string
}
