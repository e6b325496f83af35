package v3

import "testing"

func TestNetworkSetValidation(t *testing.T) {
	ns := func(labels, nets string) string {
		return "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata:\n  name: ns1\n  namespace: prod\n" + labels + "spec:\n  nets: " + nets + "\n"
	}
	gns := func(nets string) string {
		return "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: gns1\nspec:\n  nets: " + nets + "\n"
	}
	runValidationCases(t, []validationCase{
		{name: "good", doc: ns("", "[10.0.0.0/8, 'fd00::/64', 192.168.0.1]")},
		// Calico's `cidr` rule for network sets does not require masking.
		{name: "unmasked accepted", doc: gns("[10.0.0.1/8]")},
		{name: "empty", doc: gns("[]")},
		{name: "bad nets", doc: gns("[10.0.0.0/8, not-a-net, 10.0.0.0/40]"),
			errs: []want{{"spec.nets[1]", `"not-a-net" is not a valid IP address or CIDR`}, {"spec.nets[2]", "is not a valid CIDR"}}},
		{name: "reserved label", doc: ns("  labels:\n    projectcalico.org/namespace: x\n", "[]"),
			errs: []want{{"metadata.labels[projectcalico.org/namespace]", "reserved label"}}},
		{name: "namespace required", doc: "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata:\n  name: x\n",
			errs: []want{{"metadata.namespace", "required"}}},
	})
}

func TestParseNet(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.1/8": "10.0.0.0/8", "10.1.2.3": "10.1.2.3/32", "fd00::1": "fd00::1/128", "fd00::1/64": "fd00::/64"} {
		p, fe := ParseNet("x", in)
		if fe != nil || p.String() != want {
			t.Errorf("ParseNet(%q) = %v, %v; want %s", in, p, fe, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/", "fe80::1%eth0", "x/8"} {
		if _, fe := ParseNet("x", in); fe == nil {
			t.Errorf("ParseNet(%q) accepted", in)
		}
	}
}
