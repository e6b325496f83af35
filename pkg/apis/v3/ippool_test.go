package v3

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestIPPoolValidation(t *testing.T) {
	pool := func(spec string) string { return infraDoc("IPPool", "p1", spec) }
	runInfraBad(t, []infraBad{
		{"cidr missing", pool("natOutgoing: true"), "spec.cidr", "required"},
		{"cidr garbage", pool("cidr: 10.0.0.0/33"), "spec.cidr", "not a valid CIDR"},
		{"cidr without prefix", pool("cidr: 10.0.0.0"), "spec.cidr", "a prefix length is required"},
		{"cidr host bits", pool("cidr: 10.0.0.1/16"), "spec.cidr", "CIDR 10.0.0.1/16 has host bits set; did you mean 10.0.0.0/16?"},
		{"block size v4 low", pool("cidr: 10.0.0.0/16\nblockSize: 19"), "spec.blockSize", "IPv4 block size must be between 20 and 32"},
		{"block size v4 high", pool("cidr: 10.0.0.0/16\nblockSize: 33"), "spec.blockSize", "between 20 and 32"},
		{"block size v6", pool("cidr: fd00::/48\nblockSize: 64"), "spec.blockSize", "IPv6 block size must be between 116 and 128"},
		{"pool smaller than block", pool("cidr: 10.0.0.0/28"), "spec.cidr", "smaller than its block size /26"},
		{"ipip mode", pool("cidr: 10.0.0.0/16\nipipMode: Sometimes"), "spec.ipipMode", `"Sometimes" is not one of Never, Always, CrossSubnet`},
		{"vxlan mode", pool("cidr: 10.0.0.0/16\nvxlanMode: always"), "spec.vxlanMode", "not one of"},
		{"both encaps", pool("cidr: 10.0.0.0/16\nipipMode: Always\nvxlanMode: CrossSubnet"), "spec.vxlanMode", "cannot enable both VXLAN and IPIP"},
		{"ipip on v6", pool("cidr: fd00::/48\nipipMode: Always"), "spec.ipipMode", "IPIP is not supported on an IPv6 IP pool"},
		{"v4 link local", pool("cidr: 169.254.0.0/16"), "spec.cidr", "overlaps the IPv4 link-local range"},
		{"v4 link local superset", pool("cidr: 128.0.0.0/1"), "spec.cidr", "169.254.0.0/16"},
		{"v6 link local", pool("cidr: fe80::/64"), "spec.cidr", "overlaps the IPv6 link-local range"},
		{"loopback", pool("cidr: 127.0.0.0/16"), "spec.cidr", "loopback"},
		{"multicast", pool("cidr: 239.0.0.0/16"), "spec.cidr", "multicast"},
		{"node selector", pool("cidr: 10.0.0.0/16\nnodeSelector: \"rack ==\""), "spec.nodeSelector", "invalid selector"},
		{"namespace selector", pool("cidr: 10.0.0.0/16\nnamespaceSelector: \"has(\""), "spec.namespaceSelector", "invalid selector"},
		{"allowed use", pool("cidr: 10.0.0.0/16\nallowedUses: [Workload, Storage]"), "spec.allowedUses[1]", `"Storage" is not one of Workload, Tunnel, LoadBalancer`},
		{"allowed use twice", pool("cidr: 10.0.0.0/16\nallowedUses: [Workload, Workload]"), "spec.allowedUses[1]", "listed twice"},
		{"loadbalancer mixed", pool("cidr: 10.0.0.0/16\nallowedUses: [LoadBalancer, Workload]"), "spec.allowedUses", "LoadBalancer cannot be combined"},
		// Calico refuses a namespaceSelector on a pool that may hand out
		// tunnel addresses, which a pool with the default allowedUses does.
		{"namespace selector, default uses", pool("cidr: 10.0.0.0/16\nnamespaceSelector: team == 'a'"), "spec.namespaceSelector", "allowedUses Tunnel cannot have a namespaceSelector"},
		{"namespace selector, tunnel", pool("cidr: 10.0.0.0/16\nnamespaceSelector: team == 'a'\nallowedUses: [Tunnel]"), "spec.namespaceSelector", "allowedUses Tunnel cannot have a namespaceSelector"},
		{"assignment mode", pool("cidr: 10.0.0.0/16\nassignmentMode: Lazy"), "spec.assignmentMode", "not one of Automatic, Manual"},
		{"v1 ipip", pool("cidr: 10.0.0.0/16\nipip:\n  enabled: true"), "spec.ipip", "use ipipMode"},
		{"v1 nat-outgoing", pool("cidr: 10.0.0.0/16\nnat-outgoing: true"), "spec.nat-outgoing", "use natOutgoing"},
		{"reservation", infraDoc("IPReservation", "r1", "reservedCIDRs: [10.0.0.5, 10.0.1.1/24, bogus]"), "spec.reservedCIDRs[1]", "has host bits set"},
		{"reservation bogus", infraDoc("IPReservation", "r1", "reservedCIDRs: [bogus]"), "spec.reservedCIDRs[0]", "not a valid IP address or CIDR"},
	})
	runInfraGood(t, map[string]string{
		"v4 all fields": pool(`cidr: 10.1.0.0/16
vxlanMode: CrossSubnet
natOutgoing: true
disabled: false
disableBGPExport: true
blockSize: 24
nodeSelector: all()
namespaceSelector: team == 'a'
allowedUses: [Workload]
assignmentMode: Manual`),
		"v6":                  pool("cidr: fd00:10::/48\nvxlanMode: Always"),
		"disabled small pool": pool("cidr: 10.0.0.0/28\ndisabled: true"),
		"loadbalancer":        pool("cidr: 10.9.0.0/24\nallowedUses: [LoadBalancer]"),
		"block equals pool":   pool("cidr: 10.0.0.0/26"),
		"reservation":         infraDoc("IPReservation", "r1", "reservedCIDRs: [10.0.0.5, 10.0.1.0/24, \"fd00::1\"]"),
		"empty reservation":   infraDoc("IPReservation", "r1", ""),
	})
}

func TestIPPoolDefaults(t *testing.T) {
	cases := []struct{ name, spec, want string }{
		{"v4", "cidr: 10.65.0.0/16\nnatOutgoing: true",
			`{"cidr":"10.65.0.0/16","vxlanMode":"Never","ipipMode":"Never","natOutgoing":true,"blockSize":26,"nodeSelector":"all()","allowedUses":["Workload","Tunnel"],"assignmentMode":"Automatic"}`},
		{"v6 canonicalised", "cidr: FD00:0:0:0::/48",
			`{"cidr":"fd00::/48","vxlanMode":"Never","ipipMode":"Never","blockSize":122,"nodeSelector":"all()","allowedUses":["Workload","Tunnel"],"assignmentMode":"Automatic"}`},
		{"explicit kept", "cidr: 10.1.0.0/16\nipipMode: CrossSubnet\nblockSize: 28\nnodeSelector: has(x)\nallowedUses: [Tunnel]\nassignmentMode: Manual",
			`{"cidr":"10.1.0.0/16","vxlanMode":"Never","ipipMode":"CrossSubnet","blockSize":28,"nodeSelector":"has(x)","allowedUses":["Tunnel"],"assignmentMode":"Manual"}`},
		{"host bits left for validation", "cidr: 10.0.0.1/16",
			`{"cidr":"10.0.0.1/16","vxlanMode":"Never","ipipMode":"Never","blockSize":26,"nodeSelector":"all()","allowedUses":["Workload","Tunnel"],"assignmentMode":"Automatic"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Decode([]byte(infraDoc("IPPool", "p", c.spec)))
			if err != nil {
				t.Fatal(err)
			}
			SetDefaults(r)
			got := specJSON(t, r)
			if got != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
			SetDefaults(r)
			if again := specJSON(t, r); again != got {
				t.Fatalf("not idempotent: %s", again)
			}
		})
	}
}

// specJSON is the marshalled "spec" of a resource.
func specJSON(t *testing.T, r Resource) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(m["spec"]))
}
