package v3

import (
	"strings"
	"testing"
)

func TestWorkloadEndpointName(t *testing.T) {
	tests := []struct{ node, orch, workload, endpoint, want string }{
		{"h1", "k8s", "w1", "eth0", "h1-k8s-w1-eth0"},
		{"node1", "k8s", "my-nginx-b1337a", "eth0", "node1-k8s-my--nginx--b1337a-eth0"},
		{"rack-1-node", "cni", "abc-123", "net-1", "rack--1--node-cni-abc--123-net--1"},
		{"a", "open-stack", "vm", "tap", "a-open--stack-vm-tap"},
	}
	for _, tt := range tests {
		if got := WorkloadEndpointName(tt.node, tt.orch, tt.workload, tt.endpoint); got != tt.want {
			t.Errorf("WorkloadEndpointName(%q, %q, %q, %q) = %q, want %q", tt.node, tt.orch, tt.workload, tt.endpoint, got, tt.want)
		}
	}
}

func wep(name, spec string) string {
	return "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: " + name + "\n  namespace: default\nspec:\n" + spec
}

const wepBase = "  orchestrator: k8s\n  node: node1\n  pod: my-nginx-b1337a\n  endpoint: eth0\n  interfaceName: cali0ef24ba\n"

func TestWorkloadEndpointValidation(t *testing.T) {
	good := wepBase + `  containerID: "1337495556942031415926535"
  serviceAccountName: default
  mac: ca:fe:1d:52:bb:e9
  ipNetworks: [192.168.0.5/32, "fd00::5"]
  ipNATs: [{internalIP: 192.168.0.5, externalIP: 172.16.0.1}]
  ipv4Gateway: 169.254.1.1
  ipv6Gateway: fe80::1
  profiles: [kns.default, ksa.default.default]
  allowSpoofedSourcePrefixes: [10.9.0.0/16]
  ports:
  - {name: some-port, port: 1234, protocol: TCP}
  - {name: another-port, port: 5432, protocol: UDP, hostPort: 5432, hostIP: 10.0.0.1}
  - {port: 53, protocol: UDP, hostPort: 53}
`
	runValidationCases(t, []validationCase{
		{name: "docs sample", doc: wep("node1-k8s-my--nginx--b1337a-eth0", good)},
		{name: "cni", doc: wep("h1-cni-abc--123-eth0", "  orchestrator: cni\n  node: h1\n  containerID: abc-123\n  endpoint: eth0\n  interfaceName: cali1\n")},
		{name: "other orchestrator", doc: wep("h1-openstack-vm1-tap1", "  orchestrator: openstack\n  node: h1\n  workload: vm1\n  endpoint: tap1\n  interfaceName: tap1\n")},
		{name: "wrong name", doc: wep("node1-k8s-my-nginx-b1337a-eth0", wepBase),
			errs: []want{{"metadata.name", `expected "node1-k8s-my--nginx--b1337a-eth0"`}}},
		{name: "missing identifiers", doc: wep("x", "  interfaceName: cali1\n  orchestrator: k8s\n"),
			errs: []want{{"spec.node", "required"}, {"spec.endpoint", "required"}, {"spec.pod", `required for orchestrator "k8s"`}}},
		{name: "cni needs containerID", doc: wep("x", "  orchestrator: cni\n  node: h\n  endpoint: e\n  interfaceName: cali1\n  containerID: -bad\n"),
			errs: []want{{"spec.containerID", "is not a container ID"}, {"metadata.name", `expected "h-cni---bad-e"`}}},
		{name: "interface", doc: wep("node1-k8s-my--nginx--b1337a-eth0", strings.Replace(wepBase, "cali0ef24ba", "cali0123456789abcdef", 1)),
			errs: []want{{"spec.interfaceName", "is not an interface name"}}},
		{name: "no interface", doc: wep("node1-k8s-my--nginx--b1337a-eth0", strings.Replace(wepBase, "  interfaceName: cali0ef24ba\n", "", 1)),
			errs: []want{{"spec.interfaceName", "required"}}},
		{name: "networks and addresses", doc: wep("node1-k8s-my--nginx--b1337a-eth0", wepBase+`  ipNetworks: [10.0.0.0/24, 10.0.0.1/24, bogus, 10.0.1.1/32]
  ipNATs: [{internalIP: 10.0.9.9, externalIP: "fd00::1"}, {internalIP: x, externalIP: 1.1.1.1}]
  ipv4Gateway: "fe80::1"
  ipv6Gateway: 1.2.3.4
  mac: zz:zz
  profiles: [Bad_Profile]
  allowSpoofedSourcePrefixes: [10.9.0.1/16]
`),
			errs: []want{{"spec.ipNetworks[0]", "has more than one address"}, {"spec.ipNetworks[1]", "host bits set"}, {"spec.ipNetworks[2]", "not a valid IP address or CIDR"},
				{"spec.ipNATs[0].externalIP", "different IP versions"}, {"spec.ipNATs[0].internalIP", "is not one of the endpoint's ipNetworks"},
				{"spec.ipNATs[1].internalIP", "is not a valid IP address"},
				{"spec.ipv4Gateway", "wrong IP version"}, {"spec.ipv6Gateway", "wrong IP version"}, {"spec.mac", "is not a MAC address"},
				{"spec.profiles[0]", "Bad_Profile"}, {"spec.allowSpoofedSourcePrefixes[0]", "host bits set"}}},
		{name: "ports", doc: wep("node1-k8s-my--nginx--b1337a-eth0", wepBase+`  ports:
  - {port: 80, protocol: TCP}
  - {name: Http, port: 0, protocol: ICMP}
  - {name: dns, port: 53, protocol: GRE, hostIP: nope}
`),
			errs: []want{{"spec.ports[0].name", "required unless hostPort is set"}, {"spec.ports[1].name", `port name "Http" is invalid`},
				{"spec.ports[1].protocol", "ICMP has no ports"}, {"spec.ports[1].port", "required: a port 1-65535"},
				{"spec.ports[2].protocol", `"GRE" is not one of`}, {"spec.ports[2].hostIP", "not a valid IP address or CIDR"}}},
	})
}

func TestWorkloadEndpointDefaultName(t *testing.T) {
	r, err := Decode([]byte(wep(`""`, wepBase)))
	if err != nil {
		t.Fatal(err)
	}
	SetDefaults(r)
	if r.GetName() != "node1-k8s-my--nginx--b1337a-eth0" {
		t.Fatalf("name = %q", r.GetName())
	}
	if err := Validate(r); err != nil {
		t.Fatal(err)
	}
	// Incomplete identifiers leave the name empty, and validation says so.
	w := &WorkloadEndpoint{Spec: WorkloadEndpointSpec{Node: "n"}}
	SetDefaults(w)
	if w.Name != "" {
		t.Fatalf("name = %q", w.Name)
	}
}

func hep(spec string) string {
	return "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: h1-eth0\nspec:\n" + spec
}

func TestHostEndpointValidation(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "interface", doc: hep("  node: h1\n  interfaceName: eth0\n  profiles: [p1]\n  ports:\n  - {name: ssh, protocol: TCP, port: 22}\n  - {name: dns, protocol: 17, port: 53}\n")},
		{name: "all interfaces", doc: hep("  node: h1\n  interfaceName: '*'\n")},
		{name: "expected IPs only", doc: hep("  node: h1\n  expectedIPs: [10.0.0.1, 'fd00::1']\n")},
		{name: "nothing", doc: hep("  profiles: [p1]\n"),
			errs: []want{{"spec.node", "required"}, {"spec.interfaceName", "interfaceName or expectedIPs is required"}}},
		{name: "bad fields", doc: hep("  node: H1\n  interfaceName: 'eth 0'\n  expectedIPs: [10.0.0.0/8, bogus]\n  ports:\n  - {protocol: TCP, port: 22}\n  - {name: x, protocol: SCTP, port: 0}\n"),
			errs: []want{{"spec.node", "H1"}, {"spec.interfaceName", "is not an interface name"}, {"spec.expectedIPs[0]", "is not a valid IP address"},
				{"spec.expectedIPs[1]", "is not a valid IP address"}, {"spec.ports[0].name", "port name must not be empty"}, {"spec.ports[1].port", "required"}}},
		{name: "namespace not allowed", doc: "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: h\n  namespace: x\nspec:\n  node: h1\n  interfaceName: eth0\n",
			errs: []want{{"metadata.namespace", "cluster-scoped"}}},
	})
}

func TestEndpointDecodeStrict(t *testing.T) {
	for _, doc := range []string{
		hep("  node: h1\n  interfaceName: eth0\n  bogus: 1\n"),
		wep("x", wepBase+"  qos: {}\n"),
		np("x", "  ingress:\n  - action: Allow\n    source: {net: [10.0.0.0/8]}\n"),
		np("x", "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: ['90:abc']}\n"),
	} {
		if _, err := Decode([]byte(doc)); err == nil {
			t.Errorf("decoded:\n%s", doc)
		}
	}
	_, err := Decode([]byte(np("x", "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: ['90:abc']}\n")))
	if err == nil || !strings.Contains(err.Error(), `port "90:abc" is not a number, range or name`) {
		t.Errorf("port error = %v", err)
	}
}
