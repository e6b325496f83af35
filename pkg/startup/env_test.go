package startup

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// TestReadEnv: calico-node's environment, as a Calico etcd-mode DaemonSet
// sets it, resolved; a value Calico would not take is an error naming the
// variable.
func TestReadEnv(t *testing.T) {
	def := func(mod func(*Env)) *Env {
		e := &Env{Backend: BackendBird, PoolVXLANMode: v3.EncapNever, PoolIPIPMode: v3.EncapNever, PoolNAT: true,
			PoolBlockSize: 26, PoolNodeSelector: "all()"}
		if mod != nil {
			mod(e)
		}
		return e
	}
	debug := slog.LevelDebug
	warn := slog.LevelWarn
	for _, c := range []struct {
		name string
		env  map[string]string
		want *Env
		err  string // every line must appear in the error
	}{
		{"nothing set", nil, def(nil), ""},
		{"empty values are unset", map[string]string{"CALICO_NETWORKING_BACKEND": "", "CALICO_IPV4POOL_IPIP": " "}, def(nil), ""},
		// Calico's etcd manifest (calico-etcd.yaml) for calico-node.
		{"Calico's etcd manifest", map[string]string{
			"CALICO_NETWORKING_BACKEND": "bird", "CLUSTER_TYPE": "k8s,bgp", "IP": "autodetect",
			"CALICO_IPV4POOL_IPIP": "Always", "CALICO_IPV4POOL_VXLAN": "Never", "CALICO_IPV6POOL_VXLAN": "Never",
			"CALICO_DISABLE_FILE_LOGGING": "true", "FELIX_DEFAULTENDPOINTTOHOSTACTION": "ACCEPT", "FELIX_IPV6SUPPORT": "false",
			"FELIX_HEALTHENABLED": "true", "WAIT_FOR_DATASTORE": "true",
		}, def(func(e *Env) {
			e.ClusterType, e.PoolIPIPMode, e.DisableFileLogging, e.WaitForDatastore = "k8s,bgp", v3.EncapAlways, true, true
		}), ""},
		{"the Kubernetes node reference", map[string]string{"CALICO_K8S_NODE_REF": "worker-1"},
			def(func(e *Env) { e.KubernetesNodeRef = "worker-1" }), ""},
		{"vxlan backend, the pool's settings", map[string]string{
			"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_VXLAN": "cross-subnet", "CALICO_IPV4POOL_IPIP": "off",
			"CALICO_IPV4POOL_CIDR": "10.244.0.0/16", "CALICO_IPV6POOL_CIDR": "fd00:244::/48",
			"CALICO_IPV4POOL_BLOCK_SIZE": "24", "CALICO_IPV4POOL_NAT_OUTGOING": "False",
			"CALICO_IPV4POOL_NODE_SELECTOR": "zone == 'a'", "CALICO_STARTUP_LOGLEVEL": "DEBUG",
		}, def(func(e *Env) {
			e.Backend, e.PoolVXLANMode, e.DefaultIPv4Pool, e.DefaultIPv6Pool = BackendVXLAN, v3.EncapCrossSubnet, "10.244.0.0/16", "fd00:244::/48"
			e.PoolBlockSize, e.PoolNAT, e.PoolNodeSelector, e.StartupLogLevel = 24, false, "zone == 'a'", &debug
		}), ""},
		{"none backend, no default pools, router ID", map[string]string{
			"CALICO_NETWORKING_BACKEND": "none", "NO_DEFAULT_POOLS": "true", "CALICO_ROUTER_ID": "hash", "CALICO_STARTUP_LOGLEVEL": "warning",
		}, def(func(e *Env) {
			e.Backend, e.NoDefaultPools, e.RouterID, e.StartupLogLevel = BackendNone, true, "hash", &warn
		}), ""},
		{"router ID an address", map[string]string{"CALICO_ROUTER_ID": "10.0.0.1"}, def(func(e *Env) { e.RouterID = "10.0.0.1" }), ""},
		{"bad values, each named", map[string]string{
			"CALICO_NETWORKING_BACKEND": "gobgp", "CALICO_IPV4POOL_IPIP": "sometimes", "CALICO_IPV4POOL_BLOCK_SIZE": "33",
			"CALICO_IPV4POOL_NAT_OUTGOING": "maybe", "CALICO_IPV4POOL_NODE_SELECTOR": "zone ==", "NO_DEFAULT_POOLS": "perhaps",
			"CALICO_ROUTER_ID": "fd00::1", "WAIT_FOR_DATASTORE": "soon", "CALICO_DISABLE_FILE_LOGGING": "yes please",
			"CALICO_STARTUP_LOGLEVEL": "verbose", "CALICO_IPV4POOL_CIDR": "fd00::/48", "CALICO_IPV6POOL_CIDR": "nonsense",
		}, nil, `CALICO_NETWORKING_BACKEND="gobgp": want bird (BGP), vxlan (no BGP) or none (no routing)
CALICO_IPV4POOL_IPIP="sometimes": want Never, Always or CrossSubnet
CALICO_IPV4POOL_BLOCK_SIZE="33": want a prefix length from 20 to 32
CALICO_IPV4POOL_NAT_OUTGOING="maybe": want true or false
CALICO_IPV4POOL_NODE_SELECTOR="zone ==": not a selector
NO_DEFAULT_POOLS="perhaps": want true or false
CALICO_ROUTER_ID="fd00::1": want "hash" or an IPv4 address
WAIT_FOR_DATASTORE="soon": want true or false
CALICO_DISABLE_FILE_LOGGING="yes please": want true or false
CALICO_STARTUP_LOGLEVEL="verbose": want debug, info, warning, error, fatal or panic
CALICO_IPV4POOL_CIDR="fd00::/48": want an IPv4 CIDR
CALICO_IPV6POOL_CIDR="nonsense": want an IPv6 CIDR`},
		{"both encapsulations", map[string]string{"CALICO_IPV4POOL_IPIP": "Always", "CALICO_IPV4POOL_VXLAN": "CrossSubnet"}, nil,
			`CALICO_IPV4POOL_VXLAN="CrossSubnet" and CALICO_IPV4POOL_IPIP="Always": a pool uses one encapsulation`},
		{"no default pools and a CIDR", map[string]string{"NO_DEFAULT_POOLS": "true", "CALICO_IPV4POOL_CIDR": "10.0.0.0/16"}, nil,
			`NO_DEFAULT_POOLS=true and CALICO_IPV4POOL_CIDR="10.0.0.0/16": say one or the other`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ReadEnv(func(k string) (string, bool) { v, ok := c.env[k]; return v, ok })
			if c.err != "" {
				if err == nil {
					t.Fatalf("no error, want %q", c.err)
				}
				for _, line := range strings.Split(c.err, "\n") {
					if !strings.Contains(err.Error(), line) {
						t.Errorf("error lacks %q:\n%v", line, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestMergeClusterType(t *testing.T) {
	for _, c := range []struct{ have, add, want string }{
		{"", "k8s,bgp", "k8s,bgp"},
		{"k8s,bgp", "k8s,bgp", "k8s,bgp"},
		{"k8s,bgp", "k8s,vxlan", "k8s,bgp,vxlan"},
		{"typha", " k8s , ,bgp", "typha,k8s,bgp"},
		{"k8s", "", "k8s"},
	} {
		if got := MergeClusterType(c.have, c.add); got != c.want {
			t.Errorf("MergeClusterType(%q, %q) = %q, want %q", c.have, c.add, got, c.want)
		}
	}
}

// TestRunCalicoEnv: a default pool created with the settings of
// CALICO_IPV4POOL_* (through ReadEnv), and CLUSTER_TYPE merged into
// ClusterInformation default as calico-node merges it, node after node.
func TestRunCalicoEnv(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	c := client.New(etcdtest.NewClient(t, srv))
	env, err := ReadEnv(func(k string) (string, bool) {
		v, ok := map[string]string{
			"CALICO_IPV4POOL_CIDR": "10.244.0.0/16", "CALICO_IPV4POOL_IPIP": "CrossSubnet", "CALICO_IPV4POOL_BLOCK_SIZE": "28",
			"CALICO_IPV4POOL_NAT_OUTGOING": "false", "CALICO_IPV4POOL_NODE_SELECTOR": "!has(edge)", "CLUSTER_TYPE": "k8s,bgp",
		}[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeName: "node-e", NodenameFile: "-", Detector: fakeDetector(),
		DefaultIPv4Pool: env.DefaultIPv4Pool, DefaultPoolVXLANMode: env.PoolVXLANMode, DefaultPoolIPIPMode: env.PoolIPIPMode,
		DefaultPoolNAT: env.PoolNAT, DefaultPoolBlockSize: env.PoolBlockSize, DefaultPoolNodeSelector: env.PoolNodeSelector,
		ClusterType: env.ClusterType, KubernetesNodeRef: "k8s-node-e"}
	if _, err := Run(ctx, c, cfg); err != nil {
		t.Fatal(err)
	}
	nk, _ := v3.KindByKind(v3.KindNode)
	for range 2 { // a second run changes nothing
		nr, err := c.Get(ctx, nk, "", "node-e")
		if err != nil {
			t.Fatal(err)
		}
		if refs := nr.(*v3.Node).Spec.OrchRefs; len(refs) != 1 || refs[0] != (v3.OrchRef{NodeName: "k8s-node-e", Orchestrator: "k8s"}) {
			t.Errorf("orchRefs %+v, want the Kubernetes node k8s-node-e", refs)
		}
		if _, err := Run(ctx, c, cfg); err != nil {
			t.Fatal(err)
		}
	}
	cfg.KubernetesNodeRef = ""
	pk, _ := v3.KindByKind(v3.KindIPPool)
	r, err := c.Get(ctx, pk, "", DefaultIPv4PoolName)
	if err != nil {
		t.Fatal(err)
	}
	s := r.(*v3.IPPool).Spec
	if s.CIDR != "10.244.0.0/16" || s.IPIPMode != v3.EncapCrossSubnet || s.VXLANMode != v3.EncapNever || s.BlockSize != 28 || s.NATOutgoing || s.NodeSelector != "!has(edge)" {
		t.Errorf("default pool: %+v", s)
	}
	ck, _ := v3.KindByKind(v3.KindClusterInformation)
	clusterType := func() string {
		r, err := c.Get(ctx, ck, "", "default")
		if err != nil {
			t.Fatal(err)
		}
		return r.(*v3.ClusterInformation).Spec.ClusterType
	}
	if got := clusterType(); got != "k8s,bgp" {
		t.Errorf("clusterType %q", got)
	}
	cfg.NodeName, cfg.ClusterType = "node-f", "k8s,vxlan"
	if _, err := Run(ctx, c, cfg); err != nil {
		t.Fatal(err)
	}
	if got := clusterType(); got != "k8s,bgp,vxlan" {
		t.Errorf("clusterType after a second node %q, want k8s,bgp,vxlan", got)
	}
}
