package v3

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestBGPConfigurationValidation(t *testing.T) {
	cfg := func(name, spec string) string { return infraDoc("BGPConfiguration", name, spec) }
	runInfraBad(t, []infraBad{
		{"name", cfg("global", "asNumber: 64512"), "metadata.name", `must be "default" or "node."`},
		{"other prefix", cfg("nodes.h1", ""), "metadata.name", `must be "default"`},
		{"mesh on node config", cfg("node.h1", "nodeToNodeMeshEnabled: false"), "spec.nodeToNodeMeshEnabled", `can only be set on the "default" BGPConfiguration`},
		{"asn on node config", cfg("node.h1", "asNumber: 64512"), "spec.asNumber", "can only be set on"},
		{"cluster ips on node config", cfg("node.h1", "serviceClusterIPs: [{cidr: 10.96.0.0/12}]"), "spec.serviceClusterIPs", "can only be set on"},
		{"log level", cfg("default", "logSeverityScreen: Chatty"), "spec.logSeverityScreen", `"Chatty" is not one of`},
		{"cluster ip cidr", cfg("default", "serviceClusterIPs: [{cidr: 10.96.0.1/12}]"), "spec.serviceClusterIPs[0].cidr", "has host bits set"},
		{"external ip cidr", cfg("default", "serviceExternalIPs: [{cidr: nope}]"), "spec.serviceExternalIPs[0].cidr", "not a valid IP address or CIDR"},
		{"lb ip missing", cfg("default", "serviceLoadBalancerIPs: [{}]"), "spec.serviceLoadBalancerIPs[0].cidr", "required"},
		{"community value", cfg("default", "communities: [{name: c1, value: \"100\"}]"), "spec.communities[0].value", "must be aa:nn or aa:nn:mm"},
		{"standard community range", cfg("default", "communities: [{name: c1, value: \"65536:1\"}]"), "spec.communities[0].value", "standard community must be 0-65535"},
		{"large community range", cfg("default", "communities: [{name: c1, value: \"1:2:4294967296\"}]"), "spec.communities[0].value", "large community must be 0-4294967295"},
		{"community name", cfg("default", "communities: [{value: \"1:2\"}]"), "spec.communities[0].name", "required"},
		{"community dup", cfg("default", "communities: [{name: c, value: \"1:2\"}, {name: c, value: \"1:3\"}]"), "spec.communities[1].name", "defined twice"},
		{"prefix adv unknown community", cfg("default", "communities: [{name: c, value: \"1:2\"}]\nprefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [c, nope]}]"), "spec.prefixAdvertisements[0].communities[1]", `"nope" is neither a community defined`},
		{"prefix adv cidr", cfg("default", "prefixAdvertisements: [{cidr: 10.0.0.1/8, communities: [\"1:2\"]}]"), "spec.prefixAdvertisements[0].cidr", "host bits"},
		{"prefix adv no communities", cfg("default", "prefixAdvertisements: [{cidr: 10.0.0.0/8}]"), "spec.prefixAdvertisements[0].communities", "required"},
		{"bind mode", cfg("default", "bindMode: All"), "spec.bindMode", "not one of None, NodeIP"},
		{"mesh password", cfg("default", "nodeMeshPassword: {secretKeyRef: {name: s}}"), "spec.nodeMeshPassword.secretKeyRef.key", "required"},
		{"restart time", cfg("default", "nodeMeshMaxRestartTime: -5s"), "spec.nodeMeshMaxRestartTime", "must not be negative"},
		{"peering ipv4", cfg("default", "localWorkloadPeeringIPV4: fd00::1"), "spec.localWorkloadPeeringIPV4", "not an IPv4 address"},
		{"aggregation", cfg("default", "serviceLoadBalancerAggregation: Sometimes"), "spec.serviceLoadBalancerAggregation", "not one of Enabled, Disabled"},
		{"ignored interface", cfg("default", "ignoredInterfaces: [\"a very long interface name\"]"), "spec.ignoredInterfaces[0]", "not a valid interface name"},
		{"cluster routes", cfg("default", "programClusterRoutes: BIRD"), "spec.programClusterRoutes", "not one of Disabled, Enabled, EnabledIPIPOnly, EnabledNoEncapOnly"},
		{"route priority", cfg("default", "ipv6NormalRoutePriority: 0"), "spec.ipv6NormalRoutePriority", "out of range"},
	})
	runInfraGood(t, map[string]string{
		"node config": cfg("node.h1", "logSeverityScreen: Debug\nlistenPort: 1790\ncommunities: [{name: c, value: \"1:2\"}]\nprefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [c]}]"),
		"full default": cfg("default", `logSeverityScreen: Info
nodeToNodeMeshEnabled: true
asNumber: "1.10"
serviceLoadBalancerIPs: [{cidr: 192.0.2.0/24}]
serviceExternalIPs: [{cidr: 198.51.100.0/24}, {cidr: 203.0.113.7}]
serviceClusterIPs: [{cidr: 10.96.0.0/12}, {cidr: "fd00:96::/108"}]
communities: [{name: std, value: "65535:65535"}, {name: large, value: "4294967295:1:2"}]
prefixAdvertisements: [{cidr: 192.0.2.0/24, communities: [std, "1:2", large]}]
listenPort: 179
nodeMeshPassword: {secretKeyRef: {name: bgp-secrets, key: mesh}}
nodeMeshMaxRestartTime: 2m
bindMode: NodeIP
ignoredInterfaces: ["docker*", eth1]
localWorkloadPeeringIPV4: 169.254.0.179
localWorkloadPeeringIPV6: "fe80::179"
serviceLoadBalancerAggregation: Disabled
programClusterRoutes: EnabledNoEncapOnly
ipv4NormalRoutePriority: 1024
ipv6NormalRoutePriority: 1024`),
	})
}

func TestBGPConfigurationDefaults(t *testing.T) {
	for _, c := range []struct{ name, spec, want string }{
		{"stored example", "logSeverityScreen: Info\nnodeToNodeMeshEnabled: false\nasNumber: 64512\nserviceClusterIPs: [{cidr: 10.96.0.0/12}]",
			`{"logSeverityScreen":"Info","nodeToNodeMeshEnabled":false,"asNumber":64512,"serviceClusterIPs":[{"cidr":"10.96.0.0/12"}],"serviceLoadBalancerAggregation":"Enabled"}`},
		{"empty", "", `{"serviceLoadBalancerAggregation":"Enabled"}`},
		{"explicit kept", "serviceLoadBalancerAggregation: Disabled", `{"serviceLoadBalancerAggregation":"Disabled"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := Decode([]byte(infraDoc("BGPConfiguration", "default", c.spec)))
			if err != nil {
				t.Fatal(err)
			}
			SetDefaults(r)
			SetDefaults(r)
			if got := specJSON(t, r); got != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestBGPPeerValidation(t *testing.T) {
	peer := func(spec string) string { return infraDoc("BGPPeer", "p1", spec) }
	runInfraBad(t, []infraBad{
		{"node and selector", peer("node: n1\nnodeSelector: all()\npeerIP: 10.0.0.1\nasNumber: 64512"), "spec.nodeSelector", "cannot be set together with node"},
		{"no target", peer("nodeSelector: all()"), "spec.peerIP", "one of peerIP, peerSelector or localWorkloadSelector is required"},
		{"ip and selector", peer("peerIP: 10.0.0.1\npeerSelector: has(rr)\nasNumber: 1"), "spec.peerSelector", "mutually exclusive"},
		{"bad ip", peer("peerIP: 10.0.0.300\nasNumber: 64512"), "spec.peerIP", "not a valid peer address"},
		{"v6 port without brackets", peer("peerIP: \"fd00::1:179x\"\nasNumber: 64512"), "spec.peerIP", "not a valid peer address"},
		{"port zero", peer("peerIP: \"10.0.0.1:0\"\nasNumber: 64512"), "spec.peerIP", "port must be between 1 and 65535"},
		{"asn missing", peer("peerIP: 10.0.0.1"), "spec.asNumber", "required with peerIP"},
		{"asn with selector", peer("peerSelector: has(rr)\nasNumber: 64512"), "spec.asNumber", "must not be set with peerSelector"},
		{"next hop mode", peer("peerIP: 10.0.0.1\nasNumber: 1\nnextHopMode: Other"), "spec.nextHopMode", "not one of Auto, Self, Keep"},
		{"next hop both", peer("peerIP: 10.0.0.1\nasNumber: 1\nnextHopMode: Self\nkeepOriginalNextHop: true"), "spec.keepOriginalNextHop", "cannot be set together with nextHopMode"},
		{"source address", peer("peerIP: 10.0.0.1\nasNumber: 1\nsourceAddress: Node"), "spec.sourceAddress", "not one of UseNodeIP, None"},
		{"keepalive", peer("peerIP: 10.0.0.1\nasNumber: 1\nkeepaliveTime: 500ms"), "spec.keepaliveTime", "between 1s and 65535s"},
		{"max restart", peer("peerIP: 10.0.0.1\nasNumber: 1\nmaxRestartTime: -1s"), "spec.maxRestartTime", "must not be negative"},
		{"peer selector", peer("peerSelector: \"!has(\""), "spec.peerSelector", "invalid selector"},
		{"node selector", peer("nodeSelector: \"a = 'b'\"\npeerIP: 10.0.0.1\nasNumber: 1"), "spec.nodeSelector", "invalid selector"},
		{"password", peer("peerIP: 10.0.0.1\nasNumber: 1\npassword: {}"), "spec.password.secretKeyRef", "required"},
		{"failure detection", peer("peerIP: 10.0.0.1\nasNumber: 1\nfailureDetectionMode: BFD"), "spec.failureDetectionMode", "not one of None, BFDIfDirectlyConnected"},
		{"restart mode", peer("peerIP: 10.0.0.1\nasNumber: 1\nrestartMode: Fast"), "spec.restartMode", "not one of"},
		{"filter name", peer("peerIP: 10.0.0.1\nasNumber: 1\nfilters: [Bad_Name]"), "spec.filters[0]", "RFC 1123"},
		{"ttl security", peer("peerIP: 10.0.0.1\nasNumber: 1\nttlSecurity: 0"), "spec.ttlSecurity", "between 1 and 255"},
		{"reachable by", peer("peerIP: 10.0.0.1\nasNumber: 1\nreachableBy: gateway"), "spec.reachableBy", "not a valid IP address"},
		{"node name", peer("node: Bad_Node\npeerIP: 10.0.0.1\nasNumber: 1"), "spec.node", "RFC 1123"},
	})
	runInfraGood(t, map[string]string{
		"full": peer(`nodeSelector: rack == 'r1'
peerIP: "[fd00::1]:1790"
asNumber: "1.10"
keepOriginalNextHop: false
nextHopMode: Keep
password: {secretKeyRef: {name: bgp-secrets, key: rr-password}}
sourceAddress: None
failureDetectionMode: BFDIfDirectlyConnected
restartMode: LongLivedGracefulRestart
maxRestartTime: 2m
birdGatewayMode: DirectIfDirectlyConnected
numAllowedLocalASNumbers: 1
ttlSecurity: 1
filters: [f1, f2]
reachableBy: 10.0.0.254
keepaliveTime: 20s
localASNumber: 65001
reversePeering: Manual`),
		"local workloads": peer("localWorkloadSelector: has(bgp)\nasNumber: 65010"),
		"ipv4 with port":  peer("peerIP: 10.0.0.1:179\nasNumber: 64512"),
	})
}

func TestBGPFilterValidation(t *testing.T) {
	f := func(spec string) string { return infraDoc("BGPFilter", "f1", spec) }
	runInfraBad(t, []infraBad{
		{"action missing", f("exportV4: [{cidr: 10.0.0.0/8, matchOperator: In}]"), "spec.exportV4[0].action", "must be one of Accept, Reject"},
		{"action", f("importV4: [{action: Drop}]"), "spec.importV4[0].action", "not one of Accept, Reject"},
		{"operator", f("exportV4: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: Contains}]"), "spec.exportV4[0].matchOperator", "not one of Equal, NotEqual, In, NotIn"},
		{"cidr without operator", f("exportV4: [{action: Accept, cidr: 10.0.0.0/8}]"), "spec.exportV4[0].matchOperator", "must be set together"},
		{"v6 cidr in v4 rule", f("exportV4: [{action: Accept, cidr: \"fd00::/8\", matchOperator: In}]"), "spec.exportV4[0].cidr", "not an IPv4 CIDR"},
		{"v4 cidr in v6 rule", f("importV6: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: In}]"), "spec.importV6[0].cidr", "not an IPv6 CIDR"},
		{"cidr host bits", f("exportV4: [{action: Accept, cidr: 10.0.0.1/8, matchOperator: Equal}]"), "spec.exportV4[0].cidr", "host bits"},
		{"source", f("exportV6: [{action: Reject, source: Everyone}]"), "spec.exportV6[0].source", "not one of RemotePeers"},
		{"prefix min > max", f("exportV4: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: In, prefixLength: {min: 28, max: 24}}]"), "spec.exportV4[0].prefixLength", "min 28 is greater than max 24"},
		{"prefix v4 bound", f("exportV4: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: In, prefixLength: {max: 33}}]"), "spec.exportV4[0].prefixLength.max", "between 0 and 32"},
		{"prefix v6 bound", f("exportV6: [{action: Accept, cidr: \"fd00::/8\", matchOperator: In, prefixLength: {min: 129}}]"), "spec.exportV6[0].prefixLength.min", "between 0 and 128"},
		{"prefix without cidr", f("exportV4: [{action: Accept, prefixLength: {min: 24}}]"), "spec.exportV4[0].prefixLength", "requires cidr"},
		{"interface", f("exportV4: [{action: Accept, interface: \"bad iface!\"}]"), "spec.exportV4[0].interface", "not a valid interface name"},
	})
	runInfraGood(t, map[string]string{
		"all": f(`exportV4:
- {action: Accept, matchOperator: In, cidr: 77.0.0.0/16, prefixLength: {min: 24, max: 32}}
- {action: Reject, interface: "eth*", source: RemotePeers}
importV4:
- {action: Reject, matchOperator: NotIn, cidr: 10.0.0.0/8}
exportV6:
- {action: Accept, matchOperator: Equal, cidr: "fd00::/64", prefixLength: {min: 64, max: 128}}
importV6:
- {action: Accept}`),
	})
}

func TestBGPPeerJSONOrder(t *testing.T) {
	r, err := Decode([]byte(infraDoc("BGPPeer", "p", "asNumber: \"1.10\"\npeerIP: 10.0.0.1\nnodeSelector: all()\nnode: \"\"")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	if !strings.HasSuffix(string(b), `"spec":{"nodeSelector":"all()","peerIP":"10.0.0.1","asNumber":65546}}`) {
		t.Errorf("got %s", b)
	}
}
