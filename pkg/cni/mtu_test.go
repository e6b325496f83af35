package cni_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tortie/tortie/pkg/cni"
)

// TestMTUFromFile: with no mtu in its config, the plugin gives the workload's
// veth (both ends) the MTU tortie-node keeps in the MTU file; with
// require_mtu_file and no file, ADD fails before anything is allocated.
func TestMTUFromFile(t *testing.T) {
	e := newEnv(t)
	file := filepath.Join(t.TempDir(), "mtu")
	conf := e.pluginConf("mtu", "1.0.0", func(p map[string]any) {
		delete(p, "mtu")
		p["mtu_file"] = file
		p["require_mtu_file"] = true
	})
	netns := e.workloadNS()
	id := "mtu-" + randHex(6)
	vars := containerVars(id, netns, "eth0", "")

	te := e.exec(cni.PluginType, "ADD", conf, vars...).cniError(t)
	if te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "the MTU file "+file+" is missing") {
		t.Errorf("ADD with no MTU file: code %d %q, want 7 naming the file", te.Code, te.Msg)
	}
	e.assertClean(t)
	if linkIn(netns, "eth0") {
		t.Error("eth0 made by a refused ADD")
	}

	if err := os.WriteFile(file, []byte("1440\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.exec(cni.PluginType, "ADD", conf, vars...).ok(t, "ADD with the MTU file")
	if out := run(t, "ip", "-n", strings.TrimPrefix(netns, "/run/netns/"), "link", "show", "eth0"); !strings.Contains(out, " mtu 1440 ") {
		t.Errorf("container eth0: %s, want mtu 1440", out)
	}
	if links := e.hostLinks(); len(links) != 1 {
		t.Fatalf("host links: %v", links)
	} else if out := run(t, "ip", "-n", e.hostNS, "link", "show", links[0]); !strings.Contains(out, " mtu 1440 ") {
		t.Errorf("host veth: %s, want mtu 1440", out)
	}
	e.exec(cni.PluginType, "DEL", conf, vars...).ok(t, "DEL")
	e.assertClean(t)
}
