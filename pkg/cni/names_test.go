package cni_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/cni"
)

// link puts the plugin binary into e.cniPath under another name, as an
// operator would (a symbolic link).
func (e *env) link(name string) {
	e.t.Helper()
	if err := os.Symlink(cni.PluginType, filepath.Join(e.cniPath, name)); err != nil && !os.IsExist(err) {
		e.t.Fatal(err)
	}
}

// TestCalicoNames: linked as calico and calico-ipam (an operator migrating
// from Calico), the binary plays the same two roles as under tortie's
// names, in every combination, with Calico's cniVersion; called by any
// other name it refuses, naming the valid ones; as the network plugin it
// refuses an ipam.type that names a network plugin (it would call itself
// without end), for DEL too; delegating to host-local still works.
func TestCalicoNames(t *testing.T) {
	e := newEnv(t)
	e.link(cni.CalicoPluginType)
	e.link(cni.CalicoIPAMType)
	e.link("tortie-cni")
	ctx := context.Background()

	for _, c := range []struct{ plugin, ipam string }{
		{cni.CalicoPluginType, cni.CalicoIPAMType},
		{cni.CalicoPluginType, cni.IPAMType},
		{cni.PluginType, cni.CalicoIPAMType},
	} {
		t.Run(c.plugin+"+"+c.ipam, func(t *testing.T) {
			netName := "n-" + c.plugin + "-" + c.ipam
			list := confList(t, e.netConf(netName, "0.3.1", func(p map[string]any) {
				p["type"] = c.plugin
				p["ipam"] = map[string]any{"type": c.ipam, "assign_ipv6": "true"}
			}))
			rt := &libcni.RuntimeConf{ContainerID: "names-" + randHex(4), NetNS: e.workloadNS(), IfName: "eth0"}
			res, err := e.add(list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			v4, v6 := ipsOf(res)
			_, pool4, _ := net.ParseCIDR(testPoolV4)
			_, pool6, _ := net.ParseCIDR(testPoolV6)
			if v4 == nil || v6 == nil || !pool4.Contains(v4) || !pool6.Contains(v6) {
				t.Fatalf("addresses %v, want one from %s and one from %s", res.IPs, testPoolV4, testPoolV6)
			}
			// tortie's IPAM made the allocation, under Calico's handle.
			if _, err := e.be.Get(ctx, "/calico/ipam/v2/handle/"+cni.HandleID(netName, rt.ContainerID)); err != nil {
				t.Errorf("IPAM handle: %v", err)
			}
			getWEP(t, e, "default", v3.WorkloadEndpointName(e.node, "cni", rt.ContainerID, "eth0"))
			if err := e.del(list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			e.assertClean(t)
		})
	}

	t.Run("calico-ipam alone", func(t *testing.T) {
		// The IPAM plugin is handed the network plugin's config ("type":
		// "calico"): its name, not the type, says it is the IPAM plugin.
		conf := e.pluginConf("ipamalone", "1.0.0", func(p map[string]any) {
			p["type"] = cni.CalicoPluginType
			p["ipam"] = map[string]any{"type": cni.CalicoIPAMType}
		})
		netns := e.workloadNS()
		vars := containerVars("ipam-"+randHex(4), netns, "eth0", "")
		r := e.exec(cni.CalicoIPAMType, "ADD", conf, vars...)
		r.ok(t, "calico-ipam ADD")
		var res struct {
			IPs        []struct{ Address string }
			Interfaces []any
		}
		json.Unmarshal(r.stdout, &res)
		if len(res.IPs) != 1 || !strings.HasSuffix(res.IPs[0].Address, "/26") || len(res.Interfaces) != 0 {
			t.Errorf("calico-ipam ADD result: %s; want one address with its block's /26 and no interface", r.stdout)
		}
		if linkIn(netns, "eth0") || len(e.hostLinks()) > 0 {
			t.Error("calico-ipam ADD made interfaces")
		}
		e.exec(cni.CalicoIPAMType, "DEL", conf, vars...).ok(t, "calico-ipam DEL")
		e.assertClean(t)
	})

	t.Run("another name", func(t *testing.T) {
		conf := e.pluginConf("othername", "1.0.0", nil)
		netns := e.workloadNS()
		for _, cmd := range []string{"ADD", "DEL"} {
			te := e.exec("tortie-cni", cmd, conf, containerVars("other-1", netns, "eth0", "")...).cniError(t)
			if te.Code != cni.CodeInstallName || !strings.Contains(te.Msg, `called as "tortie-cni"`) {
				t.Errorf("%s as tortie-cni: %d %q", cmd, te.Code, te.Msg)
			}
			for _, n := range []string{"tortie", "calico", "tortie-ipam", "calico-ipam"} {
				if !strings.Contains(te.Msg, " "+n+" ") {
					t.Errorf("%s as tortie-cni: the message does not name %s: %q", cmd, n, te.Msg)
				}
			}
		}
		if linkIn(netns, "eth0") || len(e.hostLinks()) > 0 {
			t.Error("ADD under another name made interfaces")
		}
		// Asking for the versions needs no role.
		if r := e.exec("tortie-cni", "VERSION", conf); r.err != nil || !strings.Contains(string(r.stdout), "0.3.1") {
			t.Errorf("VERSION as tortie-cni: %v %s", r.err, r.stdout)
		}
		e.assertClean(t)
	})

	t.Run("ipam.type names a network plugin", func(t *testing.T) {
		for _, c := range []struct{ plugin, ipam string }{
			{cni.CalicoPluginType, cni.CalicoPluginType},
			{cni.PluginType, cni.PluginType},
			{cni.PluginType, cni.CalicoPluginType},
			{cni.CalicoPluginType, cni.PluginType},
		} {
			list := confList(t, e.netConf("selfref", "1.0.0", func(p map[string]any) {
				p["type"] = c.plugin
				p["ipam"] = map[string]any{"type": c.ipam}
			}))
			rt := &libcni.RuntimeConf{ContainerID: "self-" + randHex(4), NetNS: e.workloadNS(), IfName: "eth0"}
			// A plugin that called itself would not return: bound the wait.
			tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := e.inHost(func() error { _, err := e.lib().AddNetworkList(tctx, list, rt); return err })
			te := cniError(t, err)
			if te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, `ipam.type "`+c.ipam+`" names the network plugin`) ||
				!strings.Contains(te.Msg, `"calico-ipam" or "tortie-ipam"`) {
				t.Errorf("%s with ipam.type %s: ADD %d %q", c.plugin, c.ipam, te.Code, te.Msg)
			}
			te = cniError(t, e.inHost(func() error { return e.lib().DelNetworkList(tctx, list, rt) }))
			if te.Code != types.ErrInvalidNetworkConfig {
				t.Errorf("%s with ipam.type %s: DEL %d %q", c.plugin, c.ipam, te.Code, te.Msg)
			}
			cancel()
			if linkIn(rt.NetNS, "eth0") {
				t.Error("eth0 made")
			}
		}
		e.assertClean(t)
	})

	t.Run("calico with host-local", func(t *testing.T) {
		tool(t, "host-local")
		list := confList(t, e.netConf("calicohl", "0.3.1", func(p map[string]any) {
			p["type"] = cni.CalicoPluginType
			p["ipam"] = map[string]any{"type": "host-local", "dataDir": t.TempDir(), "ranges": [][]map[string]string{{{"subnet": "10.124.0.0/24"}}}}
		}))
		rt := &libcni.RuntimeConf{ContainerID: "calhl-1", NetNS: e.workloadNS(), IfName: "eth0"}
		res, err := e.add(list, rt)
		if err != nil {
			t.Fatal(err)
		}
		if v4, _ := ipsOf(res); !strings.HasPrefix(v4.String(), "10.124.0.") {
			t.Errorf("address %s not from host-local's range", v4)
		}
		if err := e.del(list, rt); err != nil {
			t.Fatal(err)
		}
		e.assertClean(t)
	})
}
