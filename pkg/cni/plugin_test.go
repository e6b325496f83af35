package cni_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/cni"
)

// echo servers: a TCP and a UDP echo listening in a workload's namespace.
func echoServers(t *testing.T, nsPath string, ip net.IP) (tcpAddr, udpAddr string) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		if ln, err = net.Listen("tcp", net.JoinHostPort(ip.String(), "0")); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", net.JoinHostPort(ip.String(), "0"))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", nsPath, err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return ln.Addr().String(), pc.LocalAddr().String()
}

// echoFrom sends a line from a workload's namespace and expects it back.
func echoFrom(nsPath, network, addr string) error {
	var c net.Conn
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout(network, addr, 3*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	msg := fmt.Sprintf("hello over %s to %s\n", network, addr)
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg {
		return fmt.Errorf("echo %q, sent %q", got, msg)
	}
	return nil
}

func ipsOf(res *current.Result) (v4, v6 net.IP) {
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() != nil {
			v4 = ipc.Address.IP
		} else {
			v6 = ipc.Address.IP
		}
	}
	return v4, v6
}

func addrStrings(res *current.Result) string {
	var out []string
	for _, ipc := range res.IPs {
		out = append(out, ipc.Address.String())
	}
	return strings.Join(out, ",")
}

func getWEP(t *testing.T, e *env, ns, name string) *v3.WorkloadEndpoint {
	t.Helper()
	r, err := e.cl.Get(context.Background(), wepKind(), ns, name)
	if err != nil {
		t.Fatalf("WorkloadEndpoint %s/%s: %v", ns, name, err)
	}
	return r.(*v3.WorkloadEndpoint)
}

// TestLibcniTwoWorkloads drives the plugin through libcni for every spec
// version from 0.3.0 to 1.1.0: a Kubernetes pod and a plain container, dual
// stack, reach each other by TCP and UDP; the result (in the config's
// version), host plumbing and WorkloadEndpoints are Calico's; a retried ADD
// changes nothing; from 0.4.0, CHECK passes, then fails once the host route
// is removed by hand; DEL (twice) leaves nothing.
func TestLibcniTwoWorkloads(t *testing.T) {
	e := newEnv(t)
	for _, ver := range specVersions {
		t.Run(ver, func(t *testing.T) {
			netName := "net" + strings.ReplaceAll(ver, ".", "")
			list := confList(t, e.netConf(netName, ver, func(p map[string]any) {
				p["ipam"] = map[string]any{"type": cni.IPAMType, "assign_ipv4": "true", "assign_ipv6": "true"}
			}))
			nsA, nsB := e.workloadNS(), e.workloadNS()
			podRT := &libcni.RuntimeConf{
				ContainerID: "pod-" + randHex(6), NetNS: nsA, IfName: "eth0",
				Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "team-a"}, {"K8S_POD_NAME", "web-1"}},
			}
			ctrRT := &libcni.RuntimeConf{
				ContainerID: "ctr-" + randHex(6), NetNS: nsB, IfName: "eth0",
				CapabilityArgs: map[string]any{"labels": map[string]string{"app": "client", "tier": "front"}},
			}
			resA, err := e.add(list, podRT)
			if err != nil {
				t.Fatalf("ADD pod: %v", err)
			}
			resB, err := e.add(list, ctrRT)
			if err != nil {
				t.Fatalf("ADD container: %v", err)
			}

			// Result: host veth named as Calico, /32 and /128 on eth0.
			sum := sha1.Sum([]byte("team-a.web-1"))
			wantHost := "cali" + hex.EncodeToString(sum[:])[:11]
			if len(resA.Interfaces) != 2 || resA.Interfaces[0].Name != wantHost || resA.Interfaces[0].Mac != "ee:ee:ee:ee:ee:ee" ||
				resA.Interfaces[1].Name != "eth0" || resA.Interfaces[1].Sandbox != nsA {
				t.Fatalf("interfaces %+v, want host %s (ee:ee:ee:ee:ee:ee) and eth0 in %s", resA.Interfaces, wantHost, nsA)
			}
			a4, a6 := ipsOf(resA)
			b4, b6 := ipsOf(resB)
			if a4 == nil || a6 == nil || b4 == nil || b6 == nil {
				t.Fatalf("want one IPv4 and one IPv6 address each: %v / %v", resA.IPs, resB.IPs)
			}
			for _, ipc := range resA.IPs {
				if ones, bits := ipc.Address.Mask.Size(); ones != bits {
					t.Errorf("address %s: want a host prefix", ipc.Address.String())
				}
			}

			// Host plumbing, as an operator would look at it.
			hostRoutes := run(t, "ip", "-n", e.hostNS, "route", "show", "dev", wantHost)
			if !strings.Contains(hostRoutes, a4.String()+" scope link") {
				t.Errorf("host routes of %s:\n%s\nwant %s scope link", wantHost, hostRoutes, a4)
			}
			for _, s := range []string{"net.ipv4.conf." + wantHost + ".proxy_arp", "net.ipv4.conf." + wantHost + ".forwarding", "net.ipv4.neigh." + wantHost + ".proxy_delay"} {
				got := strings.TrimSpace(run(t, "ip", "netns", "exec", e.hostNS, "sysctl", "-n", s))
				want := "1"
				if strings.HasSuffix(s, "proxy_delay") {
					want = "0"
				}
				if got != want {
					t.Errorf("%s = %s, want %s", s, got, want)
				}
			}
			contRoutes := run(t, "ip", "-n", strings.TrimPrefix(nsA, "/run/netns/"), "route", "show")
			for _, want := range []string{"default via 169.254.1.1 dev eth0", "169.254.1.1 dev eth0 scope link"} {
				if !strings.Contains(contRoutes, want) {
					t.Errorf("container routes:\n%s\nwant %q", contRoutes, want)
				}
			}
			contRoutes6 := run(t, "ip", "-n", strings.TrimPrefix(nsA, "/run/netns/"), "-6", "route", "show", "default")
			if !strings.Contains(contRoutes6, "via fe80:") {
				t.Errorf("container IPv6 default route: %q, want via the host veth's link-local address", contRoutes6)
			}
			if mtu := run(t, "ip", "-n", strings.TrimPrefix(nsA, "/run/netns/"), "link", "show", "eth0"); !strings.Contains(mtu, "mtu 1450") {
				t.Errorf("container eth0: %s, want mtu 1450", mtu)
			}

			// WorkloadEndpoints.
			wepA := getWEP(t, e, "team-a", v3.WorkloadEndpointName(e.node, "k8s", "web-1", "eth0"))
			if wepA.Spec.Orchestrator != "k8s" || wepA.Spec.Pod != "web-1" || wepA.Spec.Node != e.node || wepA.Spec.ContainerID != podRT.ContainerID ||
				wepA.Spec.InterfaceName != wantHost || wepA.Spec.Endpoint != "eth0" || wepA.Spec.MAC != resA.Interfaces[1].Mac ||
				!slices.Equal(wepA.Spec.Profiles, []string{"kns.team-a"}) ||
				!slices.Equal(wepA.Spec.IPNetworks, []string{a4.String() + "/32", a6.String() + "/128"}) {
				t.Errorf("pod endpoint: %+v", wepA.Spec)
			}
			wepB := getWEP(t, e, "default", v3.WorkloadEndpointName(e.node, "cni", ctrRT.ContainerID, "eth0"))
			if wepB.Spec.Orchestrator != "cni" || wepB.Spec.Workload != ctrRT.ContainerID || wepB.Labels["app"] != "client" || wepB.Labels["tier"] != "front" ||
				!slices.Equal(wepB.Spec.Profiles, []string{netName}) {
				t.Errorf("container endpoint: labels %v spec %+v", wepB.Labels, wepB.Spec)
			}

			// Two workloads on one host talk, both ways, TCP and UDP, v4 and v6.
			for _, pair := range []struct {
				from string
				ip   net.IP
				to   string
			}{{nsB, a4, nsA}, {nsA, b4, nsB}, {nsB, a6, nsA}, {nsA, b6, nsB}} {
				tcp, udp := echoServers(t, pair.to, pair.ip)
				if err := echoFrom(pair.from, "tcp", tcp); err != nil {
					t.Errorf("TCP to %s: %v", tcp, err)
				}
				if err := echoFrom(pair.from, "udp", udp); err != nil {
					t.Errorf("UDP to %s: %v", udp, err)
				}
			}

			// A retried ADD returns the same result and allocates nothing.
			again, err := e.add(list, podRT)
			if err != nil {
				t.Fatalf("retried ADD: %v", err)
			}
			if addrStrings(again) != addrStrings(resA) || again.Interfaces[1].Mac != resA.Interfaces[1].Mac {
				t.Errorf("retried ADD: %v %v, first %v %v", again.IPs, again.Interfaces, resA.IPs, resA.Interfaces)
			}
			if r, _ := e.ipam.Check(context.Background()); r.Allocations != 4 {
				t.Errorf("after a retried ADD: %d allocations, want 4", r.Allocations)
			}

			// CHECK passes, then fails once the host route is gone. Before
			// 0.4.0 there is no CHECK (TestVersionRules: the plugin refuses
			// it too).
			if !atLeast(ver, "0.4.0") {
				if err := e.check(list, podRT); err == nil || !errors.Is(err, libcni.ErrorCheckNotSupp) {
					t.Errorf("CHECK on a %s config: %v, want libcni's refusal", ver, err)
				}
			} else if err := e.check(list, podRT); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			if atLeast(ver, "0.4.0") {
				if err := e.check(list, ctrRT); err != nil {
					t.Fatalf("CHECK container: %v", err)
				}
				run(t, "ip", "-n", e.hostNS, "route", "del", a4.String()+"/32", "dev", wantHost)
				te := cniError(t, e.check(list, podRT))
				if te.Code != cni.CodeCheckFailed || !strings.Contains(te.Msg, "host route "+a4.String()+"/32") {
					t.Errorf("CHECK after removing the host route: %d %q", te.Code, te.Msg)
				}
			}

			if ver == "1.1.0" {
				if err := e.inHost(func() error { return e.lib().GetStatusNetworkList(context.Background(), list) }); err != nil {
					t.Errorf("STATUS: %v", err)
				}
			}

			for _, rt := range []*libcni.RuntimeConf{podRT, ctrRT} {
				if err := e.del(list, rt); err != nil {
					t.Fatalf("DEL %s: %v", rt.ContainerID, err)
				}
				if err := e.del(list, rt); err != nil {
					t.Fatalf("second DEL %s: %v", rt.ContainerID, err)
				}
			}
			if linkIn(nsA, "eth0") || linkIn(nsB, "eth0") {
				t.Error("eth0 left in a workload namespace")
			}
			e.assertClean(t)
		})
	}
}

// TestStatus: STATUS succeeds with the datastore up and fails with code
// 50 when it is unreachable.
func TestStatus(t *testing.T) {
	e := newEnv(t)
	ok := confList(t, e.netConf("st", "1.1.0", nil))
	if err := e.inHost(func() error { return e.lib().GetStatusNetworkList(context.Background(), ok) }); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	down := confList(t, e.netConf("st", "1.1.0", func(p map[string]any) {
		p["etcd_endpoints"] = fmt.Sprintf("http://%s:1", e.rootAddr)
		p["datastore_timeout_seconds"] = 1
	}))
	te := cniError(t, e.inHost(func() error { return e.lib().GetStatusNetworkList(context.Background(), down) }))
	if te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, "not reachable") {
		t.Errorf("STATUS with etcd down: %d %q", te.Code, te.Msg)
	}
}

// TestManyConcurrent: 100 ADD then 100 DEL, 10 at a time; nothing leaks.
func TestManyConcurrent(t *testing.T) {
	e := newEnv(t)
	list := confList(t, e.netConf("many", "1.1.0", nil))
	const n, par = 100, 10
	rts := make([]*libcni.RuntimeConf, n)
	for i := range rts {
		rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("many-%03d-%s", i, randHex(3)), NetNS: e.workloadNS(), IfName: "eth0",
			Args: [][2]string{{"K8S_POD_NAMESPACE", "bulk"}, {"K8S_POD_NAME", fmt.Sprintf("pod-%03d", i)}}}
	}
	each := func(f func(rt *libcni.RuntimeConf) error) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, par)
		for _, rt := range rts {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := f(rt); err != nil {
					t.Errorf("%s: %v", rt.ContainerID, err)
				}
			}()
		}
		wg.Wait()
	}
	seen := sync.Map{}
	each(func(rt *libcni.RuntimeConf) error {
		res, err := e.add(list, rt)
		if err != nil {
			return err
		}
		v4, _ := ipsOf(res)
		if other, dup := seen.LoadOrStore(v4.String(), rt.ContainerID); dup {
			return fmt.Errorf("address %s also given to %s", v4, other)
		}
		return nil
	})
	if t.Failed() {
		t.FailNow()
	}
	if got := len(e.hostLinks()); got != n {
		t.Errorf("%d host interfaces after %d ADDs", got, n)
	}
	if rs, _, _ := e.cl.List(context.Background(), wepKind(), "bulk"); len(rs) != n {
		t.Errorf("%d endpoints after %d ADDs", len(rs), n)
	}
	each(func(rt *libcni.RuntimeConf) error { return e.del(list, rt) })
	for _, rt := range rts {
		if linkIn(rt.NetNS, "eth0") {
			t.Errorf("eth0 left in %s", rt.NetNS)
		}
	}
	e.assertClean(t)
}

// TestAddFailuresLeaveNothing: an ADD failing at each stage leaves no
// interface, address, handle or endpoint, and says why.
func TestAddFailuresLeaveNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	handleGone := func(t *testing.T, network, cid string) {
		t.Helper()
		if _, err := e.be.Get(ctx, "/calico/ipam/v2/handle/"+cni.HandleID(network, cid)); err == nil {
			t.Errorf("handle %s left behind", cni.HandleID(network, cid))
		}
	}
	nothingFor := func(t *testing.T, network string, rt *libcni.RuntimeConf) {
		t.Helper()
		if linkIn(rt.NetNS, "eth0") {
			t.Errorf("eth0 left in the container")
		}
		if l := e.hostLinks(); len(l) > 0 {
			t.Errorf("host interfaces left: %v", l)
		}
		handleGone(t, network, rt.ContainerID)
		if rs, _, _ := e.cl.List(ctx, wepKind(), ""); len(rs) > 0 {
			t.Errorf("%d endpoints left", len(rs))
		}
	}

	t.Run("pool empty", func(t *testing.T) {
		e.addPool("tiny", "10.200.0.0/30", 30)
		list := confList(t, e.netConf("tiny", "1.1.0", func(p map[string]any) {
			p["ipam"] = map[string]any{"type": cni.IPAMType, "ipv4_pools": []string{"10.200.0.0/30"}}
		}))
		var ok []*libcni.RuntimeConf
		var failed *libcni.RuntimeConf
		var ferr error
		for i := 0; i < 8 && failed == nil; i++ {
			rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("tiny-%d", i), NetNS: e.workloadNS(), IfName: "eth0"}
			if _, err := e.add(list, rt); err != nil {
				failed, ferr = rt, err
			} else {
				ok = append(ok, rt)
			}
		}
		if failed == nil {
			t.Fatal("a /30 pool never ran out")
		}
		te := cniError(t, ferr)
		if te.Code != cni.CodeNoAddresses || !strings.Contains(te.Msg, "no address") || !strings.Contains(te.Msg, "IPPool") {
			t.Errorf("pool empty: %d %q", te.Code, te.Msg)
		}
		if linkIn(failed.NetNS, "eth0") {
			t.Error("eth0 left in the failed container")
		}
		handleGone(t, "tiny", failed.ContainerID)
		if got := len(e.hostLinks()); got != len(ok) {
			t.Errorf("%d host interfaces for %d workloads", got, len(ok))
		}
		for _, rt := range ok {
			if err := e.del(list, rt); err != nil {
				t.Fatal(err)
			}
		}
		nothingFor(t, "tiny", failed)
	})

	t.Run("datastore down", func(t *testing.T) {
		list := confList(t, e.netConf("down", "1.1.0", func(p map[string]any) {
			p["etcd_endpoints"] = fmt.Sprintf("http://%s:1", e.rootAddr)
			p["datastore_timeout_seconds"] = 1
		}))
		rt := &libcni.RuntimeConf{ContainerID: "down-1", NetNS: e.workloadNS(), IfName: "eth0"}
		start := time.Now()
		te := cniError(t, func() error { _, err := e.add(list, rt); return err }())
		if te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "did not answer") || !strings.Contains(te.Msg, e.rootAddr+":1") {
			t.Errorf("datastore down: %d %q", te.Code, te.Msg)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("failing took %s", d)
		}
		nothingFor(t, "down", rt)
	})

	t.Run("interface name taken", func(t *testing.T) {
		list := confList(t, e.netConf("taken", "1.1.0", nil))
		rt := &libcni.RuntimeConf{ContainerID: "taken-1", NetNS: e.workloadNS(), IfName: "eth0"}
		run(t, "ip", "-n", strings.TrimPrefix(rt.NetNS, "/run/netns/"), "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
		te := cniError(t, func() error { _, err := e.add(list, rt); return err }())
		if te.Code != cni.CodeInterfaceExists || !strings.Contains(te.Msg, `"eth0"`) || !strings.Contains(te.Msg, "not made by tortie") {
			t.Errorf("interface taken: %d %q", te.Code, te.Msg)
		}
		if !linkIn(rt.NetNS, "eth0") {
			t.Error("the container's own eth0 was removed")
		}
		run(t, "ip", "-n", strings.TrimPrefix(rt.NetNS, "/run/netns/"), "link", "del", "eth0")
		nothingFor(t, "taken", rt)
	})

	t.Run("IPv6 disabled in the container", func(t *testing.T) {
		// Fails after addresses are allocated and the veth exists.
		list := confList(t, e.netConf("nov6", "1.1.0", func(p map[string]any) {
			p["ipam"] = map[string]any{"type": cni.IPAMType, "assign_ipv6": true}
		}))
		rt := &libcni.RuntimeConf{ContainerID: "nov6-1", NetNS: e.workloadNS(), IfName: "eth0"}
		run(t, "ip", "netns", "exec", strings.TrimPrefix(rt.NetNS, "/run/netns/"), "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
		te := cniError(t, func() error { _, err := e.add(list, rt); return err }())
		if te.Code != cni.CodeDataplane || !strings.Contains(te.Msg, "IPv6 disabled") {
			t.Errorf("IPv6 disabled: %d %q", te.Code, te.Msg)
		}
		nothingFor(t, "nov6", rt)
	})
	e.assertClean(t)
}

// TestGC: GC releases the addresses and endpoints of containers not in
// the valid attachments, and keeps the valid ones.
func TestGC(t *testing.T) {
	e := newEnv(t)
	list := confList(t, e.netConf("gcnet", "1.1.0", func(p map[string]any) { p["gc_grace_seconds"] = -1 }))
	var rts []*libcni.RuntimeConf
	for i := 0; i < 3; i++ {
		rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("gc-%d", i), NetNS: e.workloadNS(), IfName: "eth0"}
		if _, err := e.add(list, rt); err != nil {
			t.Fatal(err)
		}
		rts = append(rts, rt)
	}
	// Another network's container on this node is not this GC's business.
	other := confList(t, e.netConf("othernet", "1.1.0", nil))
	ort := &libcni.RuntimeConf{ContainerID: "other-1", NetNS: e.workloadNS(), IfName: "eth0"}
	if _, err := e.add(other, ort); err != nil {
		t.Fatal(err)
	}
	// A runtime whose cache is empty: libcni sends GC alone, no DELs.
	fresh := libcni.NewCNIConfigWithCacheDir([]string{e.cniPath}, t.TempDir(), nil)
	err := e.inHost(func() error {
		return fresh.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "gc-0", IfName: "eth0"}}})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	has := func(network, cid string) bool {
		_, err := e.be.Get(context.Background(), "/calico/ipam/v2/handle/"+cni.HandleID(network, cid))
		return err == nil
	}
	if !has("gcnet", "gc-0") || has("gcnet", "gc-1") || has("gcnet", "gc-2") || !has("othernet", "other-1") {
		t.Errorf("after GC: handles gc-0 %v gc-1 %v gc-2 %v other-1 %v; want true false false true",
			has("gcnet", "gc-0"), has("gcnet", "gc-1"), has("gcnet", "gc-2"), has("othernet", "other-1"))
	}
	rs, _, _ := e.cl.List(context.Background(), wepKind(), "")
	var left []string
	for _, r := range rs {
		left = append(left, r.(*v3.WorkloadEndpoint).Spec.ContainerID)
	}
	slices.Sort(left)
	if !slices.Equal(left, []string{"gc-0", "other-1"}) {
		t.Errorf("endpoints after GC: %v, want gc-0 and other-1", left)
	}
	if err := e.del(list, rts[0]); err != nil {
		t.Fatal(err)
	}
	if err := e.del(other, ort); err != nil {
		t.Fatal(err)
	}
	for _, rt := range rts[1:] {
		if err := e.del(list, rt); err != nil { // DEL after GC still succeeds
			t.Fatal(err)
		}
	}
	e.assertClean(t)
}

// TestHostLocalIPAM: the plugin works with the reference host-local IPAM.
func TestHostLocalIPAM(t *testing.T) {
	tool(t, "host-local")
	e := newEnv(t)
	dataDir := t.TempDir()
	list := confList(t, e.netConf("hl", "1.0.0", func(p map[string]any) {
		p["ipam"] = map[string]any{"type": "host-local", "dataDir": dataDir, "ranges": [][]map[string]string{{{"subnet": "10.123.0.0/24"}}}}
	}))
	rt := &libcni.RuntimeConf{ContainerID: "hl-1", NetNS: e.workloadNS(), IfName: "eth0"}
	res, err := e.add(list, rt)
	if err != nil {
		t.Fatal(err)
	}
	v4, _ := ipsOf(res)
	if !strings.HasPrefix(v4.String(), "10.123.0.") {
		t.Fatalf("address %s not from host-local's range", v4)
	}
	wep := getWEP(t, e, "default", v3.WorkloadEndpointName(e.node, "cni", "hl-1", "eth0"))
	if !slices.Equal(wep.Spec.IPNetworks, []string{v4.String() + "/32"}) {
		t.Errorf("endpoint ipNetworks %v", wep.Spec.IPNetworks)
	}
	if err := e.check(list, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := e.del(list, rt); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dataDir + "/hl"); len(entries) > 2 { // last_reserved_ip, lock
		t.Errorf("host-local still holds: %v", entries)
	}
	e.assertClean(t)
}

// TestCnitool drives the plugin through cnitool, CNI's own command-line
// runtime, for every spec version from 0.3.0 to 1.1.0: the result in the
// config's version (0.3.x and 0.4.0: each address with its "version"),
// CHECK from 0.4.0 (cnitool refuses it before), STATUS and GC at 1.1.0.
func TestCnitool(t *testing.T) {
	cnitool := tool(t, "cnitool")
	e := newEnv(t)
	for _, ver := range specVersions {
		t.Run(ver, func(t *testing.T) {
			name := "tool" + strings.ReplaceAll(ver, ".", "")
			e.writeConf(name, e.netConf(name, ver, nil))
			nsA, nsB := e.workloadNS(), e.workloadNS()
			tool := func(env []string, args ...string) (string, error) {
				cmd := exec.Command("ip", append([]string{"netns", "exec", e.hostNS, cnitool}, args...)...)
				cmd.Env = append(os.Environ(), "NETCONFPATH="+e.confDir, "CNI_PATH="+e.cniPath)
				cmd.Env = append(cmd.Env, env...)
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			outA, err := tool([]string{"CNI_ARGS=K8S_POD_NAMESPACE=tools;K8S_POD_NAME=a"}, "add", name, nsA)
			if err != nil {
				t.Fatalf("cnitool add: %v\n%s", err, outA)
			}
			outB, err := tool([]string{`CAP_ARGS={"labels":{"role":"b"}}`}, "add", name, nsB)
			if err != nil {
				t.Fatalf("cnitool add: %v\n%s", err, outB)
			}
			if !strings.Contains(outA, `"cniVersion": "`+ver+`"`) || !strings.Contains(outA, "ee:ee:ee:ee:ee:ee") {
				t.Errorf("cnitool add output:\n%s", outA)
			}
			if hasVersion := strings.Contains(outA, `"version": "4"`); hasVersion == atLeast(ver, "1.0.0") {
				t.Errorf("cnitool add output (%s): per-address \"version\" present %v, want %v:\n%s", ver, hasVersion, !hasVersion, outA)
			}
			rawB, err := version.NewResult(ver, []byte(outB))
			if err != nil {
				t.Fatalf("parse a %s result: %v\n%s", ver, err, outB)
			}
			resB, err := current.NewResultFromResult(rawB)
			if err != nil {
				t.Fatal(err)
			}
			b4, _ := ipsOf(resB)
			tcp, udp := echoServers(t, nsB, b4)
			if err := echoFrom(nsA, "tcp", tcp); err != nil {
				t.Errorf("TCP a->b: %v", err)
			}
			if err := echoFrom(nsA, "udp", udp); err != nil {
				t.Errorf("UDP a->b: %v", err)
			}
			out, err := tool([]string{"CNI_ARGS=K8S_POD_NAMESPACE=tools;K8S_POD_NAME=a"}, "check", name, nsA)
			switch {
			case atLeast(ver, "0.4.0") && err != nil:
				t.Errorf("cnitool check: %v\n%s", err, out)
			case !atLeast(ver, "0.4.0") && (err == nil || !strings.Contains(out, "does not support the CHECK command")):
				t.Errorf("cnitool check of a %s config: err %v, want cnitool's refusal\n%s", ver, err, out)
			}
			if ver == "1.1.0" {
				if out, err := tool(nil, "status", name, nsA); err != nil {
					t.Errorf("cnitool status: %v\n%s", err, out)
				}
			}
			if atLeast(ver, "0.4.0") {
				// Remove b's host route by hand: CHECK must now fail.
				hostB := resB.Interfaces[0].Name
				run(t, "ip", "-n", e.hostNS, "route", "del", b4.String()+"/32", "dev", hostB)
				if out, err := tool(nil, "check", name, nsB); err == nil || !strings.Contains(out, "host route") {
					t.Errorf("cnitool check after removing the host route: err %v\n%s", err, out)
				}
			}
			for _, args := range [][]string{{"CNI_ARGS=K8S_POD_NAMESPACE=tools;K8S_POD_NAME=a"}, nil} {
				netns := nsA
				if args == nil {
					netns = nsB
				}
				if out, err := tool(args, "del", name, netns); err != nil {
					t.Errorf("cnitool del: %v\n%s", err, out)
				}
			}
			if ver == "1.1.0" {
				if out, err := tool(nil, "gc", name, nsA); err != nil {
					t.Errorf("cnitool gc: %v\n%s", err, out)
				}
			}
			e.assertClean(t)
		})
	}
}

// TestRequestedIP: CNI_ARGS IP asks for exactly that address, as Calico's
// IPAM reads it. One held by another workload is refused (try again later)
// until that workload's DEL frees it, which is how an address moves from
// one workload (or host) to another; one outside every pool, a malformed
// one, or two of a family are refused naming CNI_ARGS IP; tortie-ipam
// delegated to refuses it rather than ignoring it.
func TestRequestedIP(t *testing.T) {
	e := newEnv(t)
	conf := e.pluginConf("req", "1.0.0", func(p map[string]any) {
		p["ipam"] = map[string]any{"type": cni.IPAMType}
	})
	const want = "10.65.7.9"
	nsA, nsB := e.workloadNS(), e.workloadNS()
	idA, idB := "ra-"+randHex(6), "rb-"+randHex(6)
	add := func(id, netns, args string) execResult {
		return e.exec(cni.PluginType, "ADD", conf, containerVars(id, netns, "eth0", args)...)
	}
	r := add(idA, nsA, "IP="+want)
	r.ok(t, "ADD with IP")
	var res current.Result
	if err := json.Unmarshal(r.stdout, &res); err != nil || len(res.IPs) != 1 || res.IPs[0].Address.IP.String() != want {
		t.Fatalf("result %s (%v), want exactly %s", r.stdout, err, want)
	}

	for _, tc := range []struct {
		args string
		code uint
		want string
	}{
		{"IP=" + want, types.ErrTryAgainLater, "CNI_ARGS IP: address " + want + " is held by another workload"},
		{"IP=192.0.2.1", types.ErrInvalidEnvironmentVariables, "CNI_ARGS IP: address 192.0.2.1 is in no enabled IPPool"},
		{"IP=10.65.7.300", types.ErrInvalidEnvironmentVariables, `CNI_ARGS IP=10.65.7.300: "10.65.7.300" is not an IP address`},
		{"IP=10.65.7.10,10.65.7.11", types.ErrInvalidEnvironmentVariables, "two addresses of one family"},
	} {
		te := add(idB, nsB, tc.args).cniError(t)
		if te.Code != tc.code || !strings.Contains(te.Msg+": "+te.Details, tc.want) {
			t.Errorf("ADD with %s: code %d %q (%s), want code %d containing %q", tc.args, te.Code, te.Msg, te.Details, tc.code, tc.want)
		}
	}
	if links := e.hostLinks(); len(links) != 1 {
		t.Errorf("host links after the refused ADDs: %v, want only the first workload's", links)
	}

	// The address moves: DEL of the first frees it for the second.
	e.exec(cni.PluginType, "DEL", conf, containerVars(idA, nsA, "eth0", "IP="+want)...).ok(t, "DEL of the first")
	r = add(idB, nsB, "IP="+want)
	r.ok(t, "ADD of the second after the DEL")
	if err := json.Unmarshal(r.stdout, &res); err != nil || len(res.IPs) != 1 || res.IPs[0].Address.IP.String() != want {
		t.Fatalf("second result %s (%v), want %s", r.stdout, err, want)
	}
	e.exec(cni.PluginType, "DEL", conf, containerVars(idB, nsB, "eth0", "")...).ok(t, "DEL of the second")

	ipamConf := e.pluginConf("req-ipam", "1.0.0", func(p map[string]any) { p["type"] = cni.IPAMType; p["ipam"] = map[string]any{"type": cni.IPAMType} })
	te := e.exec(cni.IPAMType, "ADD", ipamConf, containerVars(idA, nsA, "eth0", "IP="+want)...).cniError(t)
	if !strings.Contains(te.Msg, "CNI_ARGS IP is honoured by the tortie plugin") {
		t.Errorf("tortie-ipam with IP: %q", te.Msg)
	}
	e.assertClean(t)
}
