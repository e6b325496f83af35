package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Cluster is what the scenarios need from a tortie cluster. Every method
// that changes the cluster records the time of the change (LastChange), so
// that the reachability helpers can measure how long the agents took to
// enforce it.
type Cluster interface {
	// ID is the per-run identifier carried by every name the cluster made.
	ID() string

	// Apply is `tortie apply -f -` of a manifest (projectcalico.org/v3
	// kinds, networking.k8s.io/v1 NetworkPolicy, v1 Namespace).
	Apply(t testing.TB, manifest string)
	// Delete is `tortie delete -f -` of a manifest.
	Delete(t testing.TB, manifest string)
	// Patch is `tortie patch KIND NAME -n NS -p PATCH` (a JSON merge patch).
	Patch(t testing.TB, kind, namespace, name, patch string)
	// Get is `tortie get KIND NAME -n NS -o yaml`; false if there is no
	// such resource.
	Get(t testing.TB, kind, namespace, name string) (string, bool)

	// AddPod creates a workload through the real CNI plugin, in Kubernetes
	// namespace ns (the namespace's profile kns.<ns> must exist, i.e. the
	// Namespace must have been applied), with the labels as pod labels and
	// the ports declared on its WorkloadEndpoint as named ports. A server
	// in the workload answers every port: TCP accepts and echoes, UDP
	// echoes.
	AddPod(t testing.TB, ns, name string, labels map[string]string, ports []Port) *Pod
	// SetPodLabels replaces a pod's labels, as the orchestrator does when a
	// pod is relabelled (the WorkloadEndpoint's labels change).
	SetPodLabels(t testing.TB, p *Pod, labels map[string]string)
	// SetPodPorts replaces the named ports declared on a pod's endpoint.
	SetPodPorts(t testing.TB, p *Pod, ports []Port)
	// SetPodProfiles replaces the profiles of a pod's endpoint.
	SetPodProfiles(t testing.TB, p *Pod, profiles []string)

	// Probe reports whether from reaches to on port/proto within timeout:
	// "tcp" (connect and echo), "udp" (datagram and echo) or "icmp" (echo
	// request; port is ignored).
	Probe(from Source, to Target, port int, proto string, timeout time.Duration) bool

	// Hosts are the cluster's hosts, Outside a place beyond the hosts'
	// uplinks, outside every IP pool (a stand-in for the internet).
	Hosts() []*Host
	Outside() *Place
	// PoolName is the IPPool the workloads' addresses come from.
	PoolName() string

	// Ruleset is the nftables table of every host, for checks on what was
	// rendered where probing cannot tell (SCTP).
	Ruleset(t testing.TB) string

	// Settle waits until every agent has processed the last change (best
	// effort, bounded): a guard for steps whose expected matrix equals the
	// one before the change.
	Settle(t testing.TB)
	// LastChange is when the last change started.
	LastChange() time.Time

	// Reset deletes every policy-like object (network policies, global
	// ones, tiers but "default", network sets, host endpoints, profiles but
	// the namespaces'), restores the namespaces and pods to how they were
	// created, and deletes what was applied through Apply since.
	Reset(t testing.TB)
}

// Port is a named port of a workload.
type Port struct {
	Name     string // e.g. "serve-80-tcp"
	Protocol string // "TCP" or "UDP" (or "SCTP": declared, not served)
	Port     int
}

// StandardPorts are the upstream model's ports: 80 and 81, TCP and UDP,
// named serve-<port>-<proto>.
func StandardPorts() []Port {
	var ps []Port
	for _, n := range []int{80, 81} {
		for _, proto := range []string{"TCP", "UDP"} {
			ps = append(ps, Port{Name: fmt.Sprintf("serve-%d-%s", n, strings.ToLower(proto)), Protocol: proto, Port: n})
		}
	}
	return ps
}

// Source is where a probe starts: a network namespace on this machine.
type Source interface {
	String() string
	NetNS() ns.NetNS
}

// Target is what a probe goes to.
type Target interface {
	String() string
	Addr() netip.Addr
}

// Pod is a workload.
type Pod struct {
	Namespace, Name string
	Node            string
	IP              netip.Addr
	Ports           []Port
	// Labels as the pod was created with.
	Labels map[string]string
	// Endpoint is the WorkloadEndpoint's name, Interface its host veth.
	Endpoint, Interface string

	netns ns.NetNS
}

func (p *Pod) String() string   { return p.Namespace + "/" + p.Name }
func (p *Pod) Addr() netip.Addr { return p.IP }
func (p *Pod) NetNS() ns.NetNS  { return p.netns }
func (p *Pod) Short() string    { return p.Namespace[:1] + "/" + p.Name }
func (p *Pod) Is(nsKey, name string) bool {
	return strings.HasPrefix(p.Namespace, nsKey+"-") && p.Name == name
}

// Place is a network namespace that is not a workload: a host, or the
// outside world.
type Place struct {
	Name  string
	IP    netip.Addr
	netns ns.NetNS
}

func (p *Place) String() string   { return p.Name }
func (p *Place) Addr() netip.Addr { return p.IP }
func (p *Place) NetNS() ns.NetNS  { return p.netns }

// Host is one of the cluster's hosts.
type Host struct {
	Place
	// Node is the Node name the host's agent runs as.
	Node string
	// Uplink is the host's interface towards Outside; IP (Place.IP) is its
	// address there.
	Uplink string
}
