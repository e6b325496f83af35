package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/startup"
)

// TestResolveNode: calico-node's environment and tortie-node's flags,
// resolved into what startup and routing run with; a flag given wins over
// its variable.
func TestResolveNode(t *testing.T) {
	type want struct {
		noBGP, noRouting bool
		v4Pool, v6Pool   string
		vxlan, ipip      v3.EncapsulationMode
		nat              bool
		blockSize        int
		selector         string
		clusterType      string
	}
	base := want{vxlan: v3.EncapNever, ipip: v3.EncapNever, nat: true, blockSize: 26, selector: "all()"}
	with := func(mod func(*want)) want { w := base; mod(&w); return w }
	for _, c := range []struct {
		name  string
		env   map[string]string
		flags []string
		want  want
		err   string
	}{
		{"defaults: BGP, no default pool", nil, nil, base, ""},
		{"bird", map[string]string{"CALICO_NETWORKING_BACKEND": "bird", "CLUSTER_TYPE": "k8s,bgp"}, nil,
			with(func(w *want) { w.clusterType = "k8s,bgp" }), ""},
		{"vxlan: no BGP", map[string]string{"CALICO_NETWORKING_BACKEND": "vxlan"}, nil, with(func(w *want) { w.noBGP = true }), ""},
		{"none: no routing", map[string]string{"CALICO_NETWORKING_BACKEND": "none"}, nil, with(func(w *want) { w.noBGP, w.noRouting = true, true }), ""},
		{"flags win over the backend", map[string]string{"CALICO_NETWORKING_BACKEND": "none"}, []string{"--no-routing=false", "--no-bgp=false"}, base, ""},
		{"--no-bgp with bird", map[string]string{"CALICO_NETWORKING_BACKEND": "bird"}, []string{"--no-bgp"}, with(func(w *want) { w.noBGP = true }), ""},
		{"the pool from the environment", map[string]string{
			"CALICO_IPV4POOL_CIDR": "10.244.0.0/16", "CALICO_IPV6POOL_CIDR": "fd00:244::/48", "CALICO_IPV4POOL_VXLAN": "Always",
			"CALICO_IPV4POOL_NAT_OUTGOING": "false", "CALICO_IPV4POOL_BLOCK_SIZE": "27", "CALICO_IPV4POOL_NODE_SELECTOR": "all()",
		}, nil, with(func(w *want) {
			w.v4Pool, w.v6Pool, w.vxlan, w.nat, w.blockSize = "10.244.0.0/16", "fd00:244::/48", v3.EncapAlways, false, 27
		}), ""},
		{"pool flags win", map[string]string{"CALICO_IPV4POOL_CIDR": "10.244.0.0/16", "CALICO_IPV4POOL_VXLAN": "Always", "CALICO_IPV4POOL_NAT_OUTGOING": "false"},
			[]string{"--default-ipv4-pool", "10.9.0.0/16", "--default-pool-vxlan", "crosssubnet", "--default-pool-nat-outgoing"},
			with(func(w *want) { w.v4Pool, w.vxlan = "10.9.0.0/16", v3.EncapCrossSubnet }), ""},
		{"IP-in-IP pool", map[string]string{"CALICO_IPV4POOL_CIDR": "10.244.0.0/16", "CALICO_IPV4POOL_IPIP": "Always"}, nil,
			with(func(w *want) { w.v4Pool, w.ipip = "10.244.0.0/16", v3.EncapAlways }), ""},
		{"NO_DEFAULT_POOLS", map[string]string{"NO_DEFAULT_POOLS": "true"}, nil, base, ""},
		{"router ID with BGP refused", map[string]string{"CALICO_ROUTER_ID": "hash"}, nil, base, `CALICO_ROUTER_ID="hash": tortie's BGP speaker`},
		{"router ID without BGP accepted", map[string]string{"CALICO_ROUTER_ID": "hash", "CALICO_NETWORKING_BACKEND": "vxlan"}, nil, with(func(w *want) { w.noBGP = true }), ""},
		{"bad backend", map[string]string{"CALICO_NETWORKING_BACKEND": "gobgp"}, nil, base, `CALICO_NETWORKING_BACKEND="gobgp"`},
		{"bad vxlan flag", nil, []string{"--default-pool-vxlan", "sometimes"}, base, `--default-pool-vxlan "sometimes"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			env, err := startup.ReadEnv(func(k string) (string, bool) { v, ok := c.env[k]; return v, ok })
			var ns *nodeSettings
			if err == nil {
				o := parseFlags(t, c.flags)
				ns, err = resolveNode(o, env)
			}
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := ns.startup
			got := want{ns.noBGP, ns.noRouting, s.DefaultIPv4Pool, s.DefaultIPv6Pool, s.DefaultPoolVXLANMode, s.DefaultPoolIPIPMode,
				s.DefaultPoolNAT, s.DefaultPoolBlockSize, s.DefaultPoolNodeSelector, s.ClusterType}
			if got != c.want {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// parseFlags is the options the command line fills, as RunE sees them.
func parseFlags(t *testing.T, args []string) *options {
	t.Helper()
	cmd, o := newCommandOptions(nil)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	o.changed = map[string]bool{}
	cmd.Flags().Visit(func(f *pflag.Flag) { o.changed[f.Name] = true })
	return o
}
