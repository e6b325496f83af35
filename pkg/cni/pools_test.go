package cni_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/cni"
)

// TestPoolsByNameOrCIDR: ipv4_pools and ipv6_pools entries name an IPPool
// by its name or its CIDR, as in Calico's conflists; an entry that names no
// pool, a disabled pool or a pool of the other family fails the ADD with
// code 7 and an error naming the entry, and leaves nothing behind.
func TestPoolsByNameOrCIDR(t *testing.T) {
	e := newEnv(t)
	e.addPool("named-v4", "10.77.0.0/16", 26)
	e.addPool("named-v6", "fd00:77::/48", 122)
	off := &v3.IPPool{
		TypeMeta:   metav1.TypeMeta{Kind: "IPPool", APIVersion: "projectcalico.org/v3"},
		ObjectMeta: metav1.ObjectMeta{Name: "off-v4"},
		Spec:       v3.IPPoolSpec{CIDR: "10.78.0.0/16", BlockSize: 26, Disabled: true},
	}
	if _, err := e.cl.Create(context.Background(), off); err != nil {
		t.Fatal(err)
	}
	e.link(cni.CalicoIPAMType)

	conf := func(v4, v6 []string) map[string]any {
		ipam := map[string]any{"type": cni.CalicoIPAMType, "assign_ipv6": len(v6) > 0}
		if v4 != nil {
			ipam["ipv4_pools"] = v4
		}
		if v6 != nil {
			ipam["ipv6_pools"] = v6
		}
		return ipam
	}

	for _, c := range []struct {
		name       string
		v4, v6     []string
		want4      string
		want6      string
		wantErrFor string // the entry the error names; "" for success
		wantErr    string
	}{
		{name: "by name", v4: []string{"named-v4"}, v6: []string{"named-v6"}, want4: "10.77.0.0/16", want6: "fd00:77::/48"},
		{name: "by CIDR", v4: []string{"10.77.0.0/16"}, v6: []string{"fd00:77::/48"}, want4: "10.77.0.0/16", want6: "fd00:77::/48"},
		{name: "name and CIDR", v4: []string{"pool-v4"}, v6: []string{"fd00:77::/48"}, want4: testPoolV4, want6: "fd00:77::/48"},
		{name: "unknown name", v4: []string{"named-v4", "nope"}, wantErrFor: `ipam.ipv4_pools entry "nope"`, wantErr: "no IPPool has that name"},
		{name: "unknown CIDR", v4: []string{"10.99.0.0/16"}, wantErrFor: `ipam.ipv4_pools entry "10.99.0.0/16"`, wantErr: "no IPPool has that CIDR"},
		{name: "disabled by name", v4: []string{"off-v4"}, wantErrFor: `ipam.ipv4_pools entry "off-v4"`, wantErr: "IPPool off-v4 (10.78.0.0/16) is disabled"},
		{name: "disabled by CIDR", v4: []string{"named-v4", "10.78.0.0/16"}, wantErrFor: `ipam.ipv4_pools entry "10.78.0.0/16"`, wantErr: "is disabled"},
		{name: "IPv6 pool in ipv4_pools", v4: []string{"named-v6"}, wantErrFor: `ipam.ipv4_pools entry "named-v6"`, wantErr: "IPPool named-v6 (fd00:77::/48) is IPv6"},
		{name: "IPv4 pool in ipv6_pools", v6: []string{"pool-v4"}, wantErrFor: `ipam.ipv6_pools entry "pool-v4"`, wantErr: "is IPv4"},
	} {
		t.Run(c.name, func(t *testing.T) {
			netName := "pools-" + randHex(3)
			ipam := conf(c.v4, c.v6)
			list := confList(t, e.netConf(netName, "1.0.0", func(p map[string]any) { p["ipam"] = ipam }))
			rt := &libcni.RuntimeConf{ContainerID: "pools-" + randHex(4), NetNS: e.workloadNS(), IfName: "eth0"}
			res, err := e.add(list, rt)
			if c.wantErr != "" {
				te := cniError(t, err)
				if te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, c.wantErrFor+": ") || !strings.Contains(te.Msg, c.wantErr) {
					t.Errorf("ADD: %d %q; want code 7, %s: ...%s", te.Code, te.Msg, c.wantErrFor, c.wantErr)
				}
				if linkIn(rt.NetNS, "eth0") {
					t.Error("eth0 made")
				}
				e.assertClean(t)
				return
			}
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			v4, v6 := ipsOf(res)
			_, want4, _ := net.ParseCIDR(c.want4)
			_, want6, _ := net.ParseCIDR(c.want6)
			if v4 == nil || !want4.Contains(v4) || v6 == nil || !want6.Contains(v6) {
				t.Errorf("addresses %v, want from %s and %s", res.IPs, c.want4, c.want6)
			}
			if err := e.del(list, rt); err != nil {
				t.Fatal(err)
			}
			e.assertClean(t)
		})
	}

	t.Run("calico-ipam alone", func(t *testing.T) {
		pc := e.pluginConf("poolsipam", "0.3.1", func(p map[string]any) { p["ipam"] = conf([]string{"named-v4"}, nil) })
		vars := containerVars("pools-ipam-1", e.workloadNS(), "eth0", "")
		r := e.exec(cni.CalicoIPAMType, "ADD", pc, vars...)
		r.ok(t, "ADD")
		var res struct{ IPs []struct{ Address string } }
		json.Unmarshal(r.stdout, &res)
		if len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address, "10.77.") {
			t.Errorf("result %s, want one address from named-v4 (10.77.0.0/16)", r.stdout)
		}
		e.exec(cni.CalicoIPAMType, "DEL", pc, vars...).ok(t, "DEL")
		bad := e.pluginConf("poolsipam", "0.3.1", func(p map[string]any) { p["ipam"] = conf([]string{"off-v4"}, nil) })
		if te := e.exec(cni.CalicoIPAMType, "ADD", bad, vars...).cniError(t); !strings.Contains(te.Msg, `ipam.ipv4_pools entry "off-v4": IPPool off-v4 (10.78.0.0/16) is disabled`) {
			t.Errorf("disabled pool: %d %q", te.Code, te.Msg)
		}
		e.assertClean(t)
	})
}
