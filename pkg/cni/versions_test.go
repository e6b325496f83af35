package cni_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/tortie/tortie/pkg/cni"
)

// TestVersionRules runs the plugin by hand (as a runtime execs it, without
// libcni, which refuses some commands itself before the plugin is called)
// for every spec version from 0.3.0 to 1.1.0 and every command: ADD prints
// the result in the config's version, as the network plugin and as the
// IPAM plugin; CHECK takes a prevResult in that version's format from 0.4.0
// and is refused before; STATUS and GC are refused before 1.1.0; DEL is
// accepted in every version.
func TestVersionRules(t *testing.T) {
	e := newEnv(t)
	for _, ver := range specVersions {
		t.Run(ver, func(t *testing.T) {
			name := "rules" + strings.ReplaceAll(ver, ".", "")
			conf := e.pluginConf(name, ver, func(p map[string]any) {
				p["ipam"] = map[string]any{"type": cni.IPAMType, "assign_ipv6": "true"}
			})
			cid, netns := "rules-"+randHex(4), e.workloadNS()
			vars := containerVars(cid, netns, "eth0", "IgnoreUnknown=1;K8S_POD_NAMESPACE=rules;K8S_POD_NAME=p"+randHex(2))

			add := e.exec(cni.PluginType, "ADD", conf, vars...)
			add.ok(t, "ADD")
			checkResultFormat(t, ver, add.stdout, 2)

			// CHECK, with the ADD's result as prevResult in this version's
			// format.
			var withPrev map[string]any
			json.Unmarshal(conf, &withPrev)
			var prev map[string]any
			json.Unmarshal(add.stdout, &prev)
			withPrev["prevResult"] = prev
			checkConf, _ := json.Marshal(withPrev)
			check := e.exec(cni.PluginType, "CHECK", checkConf, vars...)
			if atLeast(ver, "0.4.0") {
				check.ok(t, "CHECK")
			} else if te := check.cniError(t); te.Code != types.ErrIncompatibleCNIVersion || !strings.Contains(te.Msg, "does not allow CHECK") {
				t.Errorf("CHECK of a %s config: %d %q, want code 1, CHECK not allowed", ver, te.Code, te.Msg)
			}

			for _, cmd := range []string{"STATUS", "GC"} {
				r := e.exec(cni.PluginType, cmd, conf)
				if ver == "1.1.0" {
					r.ok(t, cmd)
				} else if te := r.cniError(t); te.Code != types.ErrIncompatibleCNIVersion || !strings.Contains(te.Msg, "does not allow "+cmd) {
					t.Errorf("%s of a %s config: %d %q, want code 1", cmd, ver, te.Code, te.Msg)
				}
			}

			// The IPAM plugin alone: addresses with their block's prefix.
			ipamCID := "rules-ipam-" + randHex(4)
			ipamVars := containerVars(ipamCID, netns, "eth1", "")
			ipamAdd := e.exec(cni.IPAMType, "ADD", conf, ipamVars...)
			ipamAdd.ok(t, "IPAM ADD")
			checkResultFormat(t, ver, ipamAdd.stdout, 0)
			e.exec(cni.IPAMType, "DEL", conf, ipamVars...).ok(t, "IPAM DEL")

			for i := 0; i < 2; i++ {
				e.exec(cni.PluginType, "DEL", conf, vars...).ok(t, fmt.Sprintf("DEL %d", i+1))
			}
			e.assertClean(t)
		})
	}
}

// checkResultFormat: out is a result of spec version ver with one IPv4 and
// one IPv6 address and interfaces interfaces: "cniVersion" is ver, and
// each address says its "version" before 1.0.0 and not from 1.0.0.
func checkResultFormat(t *testing.T, ver string, out []byte, interfaces int) {
	t.Helper()
	var raw struct {
		CNIVersion string           `json:"cniVersion"`
		IPs        []map[string]any `json:"ips"`
		Interfaces []map[string]any `json:"interfaces"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatalf("result: %v\n%s", err, out)
	}
	if raw.CNIVersion != ver || len(raw.IPs) != 2 || len(raw.Interfaces) != interfaces {
		t.Fatalf("result: cniVersion %q, %d ips, %d interfaces; want %s, 2, %d:\n%s", raw.CNIVersion, len(raw.IPs), len(raw.Interfaces), ver, interfaces, out)
	}
	for _, ip := range raw.IPs {
		v, has := ip["version"]
		if has == atLeast(ver, "1.0.0") {
			t.Errorf("a %s result's address %v: \"version\" present %v", ver, ip["address"], has)
		}
		if has && v != "4" && v != "6" {
			t.Errorf("address %v: version %v", ip["address"], v)
		}
	}
	res, err := version.NewResult(ver, out)
	if err != nil {
		t.Fatalf("not a %s result: %v\n%s", ver, err, out)
	}
	if _, err := current.NewResultFromResult(res); err != nil {
		t.Fatalf("a %s result does not convert: %v", ver, err)
	}
}
