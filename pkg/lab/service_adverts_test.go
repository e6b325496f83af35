package lab_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/lab"
)

// birdRoute is one route of BIRD's table: the protocol it came from and
// its BGP next hop.
type birdRoute struct {
	proto   string
	nextHop string
	best    bool
}

// parseBirdRoutes reads `birdc show route all`: a prefix line starts a
// prefix's routes (the first of them on the same line), an indented
// "unicast [proto ...]" line each further route, and "BGP.next_hop:" gives
// the route's next hop.
func parseBirdRoutes(out string) map[netip.Prefix][]birdRoute {
	rs := map[netip.Prefix][]birdRoute{}
	var cur netip.Prefix
	var r *birdRoute
	flush := func() {
		if r != nil && cur.IsValid() {
			rs[cur] = append(rs[cur], *r)
		}
		r = nil
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		indented := line[0] == ' ' || line[0] == '\t'
		if !indented {
			flush()
			p, err := netip.ParsePrefix(f[0])
			if err != nil {
				cur = netip.Prefix{} // "BIRD ... ready.", "Table master4:"
				continue
			}
			cur, f = p, f[1:]
		}
		// A route's first line: "unicast [h1 12:00:00.000] * (100) [i]".
		if len(f) >= 2 && strings.HasPrefix(f[1], "[") {
			flush()
			r = &birdRoute{proto: strings.TrimPrefix(f[1], "["), best: slices.Contains(f, "*")}
			continue
		}
		if r != nil && f[0] == "BGP.next_hop:" && len(f) > 1 {
			r.nextHop = f[1]
		}
	}
	flush()
	return rs
}

func TestParseBirdRoutes(t *testing.T) {
	out := `BIRD 2.0.12 ready.
Table master4:
10.96.7.0/24         unicast [h1 10:00:00.000] * (100) [i]
	via 198.18.9.1 on eth1
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 
	BGP.next_hop: 198.18.9.1
	BGP.local_pref: 100
                     unicast [h2 10:00:01.000] (100) [i]
	via 198.18.9.2 on eth1
	Type: BGP univ
	BGP.next_hop: 198.18.9.2
198.18.9.0/24        unicast [direct1 10:00:00.000] * (240)
	dev eth1
	Type: device univ
`
	got := parseBirdRoutes(out)
	want := map[netip.Prefix][]birdRoute{
		netip.MustParsePrefix("10.96.7.0/24"):  {{"h1", "198.18.9.1", true}, {"h2", "198.18.9.2", false}},
		netip.MustParsePrefix("198.18.9.0/24"): {{"direct1", "", true}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

// TestLabServiceAdvertisement: BGPConfiguration's serviceClusterIPs,
// serviceExternalIPs and serviceLoadBalancerIPs are announced by every
// node to its BGP peers, here the ToR (BIRD, the hosts' route reflector),
// each with the node's own address as next hop, beside the workload
// blocks, and withdrawn by every node when removed. As Calico (confd's
// rejectcidrs), a node does not program into its kernel the routes it
// learns inside those ranges, here more specifics the ToR announces.
//
// Per-service /32s (externalTrafficPolicy Local) are not tortie's: the
// agent reads the datastore only, not Kubernetes Services and Endpoints.
func TestLabServiceAdvertisement(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("birdc"); err != nil {
		testenv.Missing(t, "birdc (Debian package bird2)")
	}
	t0 := time.Now()
	name := upLab(t, "--topology", "tor", "--hosts", "2")
	l, err := lab.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	st := l.State()
	hosts := st.Hosts
	cfg := []string{"--config", lab.ConfigFile(name)}
	sock := lab.BirdSocket(name)
	birdc := func(args ...string) string {
		out, err := exec.Command("birdc", append([]string{"-s", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Logf("birdc %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}

	// Ranges nothing else in the lab uses (its underlay is 198.18.R.0/24
	// and 198.19.R.0/24, its pool 10.244.0.0/16); R makes them the lab's own.
	r := st.Octet
	clusterIPs := netip.MustParsePrefix(fmt.Sprintf("10.96.%d.0/24", r))
	externalIPs := netip.MustParsePrefix(fmt.Sprintf("10.97.%d.0/24", r))
	lbIPs := netip.MustParsePrefix(fmt.Sprintf("10.98.%d.16/28", r))
	all := []netip.Prefix{clusterIPs, externalIPs, lbIPs}
	// What the ToR itself announces: a more specific inside the cluster
	// IPs, and a range outside every service range (the control).
	inside := netip.MustParsePrefix(fmt.Sprintf("10.96.%d.128/25", r))
	outside := netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", r))

	// wait polls BIRD's table until ok says it is as wanted.
	wait := func(what string, timeout time.Duration, ok func(map[netip.Prefix][]birdRoute) string) time.Duration {
		t.Helper()
		t1 := time.Now()
		for {
			out := birdc("show", "route", "all")
			bad := ok(parseBirdRoutes(out))
			if bad == "" {
				return time.Since(t1)
			}
			if time.Since(t1) > timeout {
				t.Fatalf("%s: not after %v: %s\nbirdc show route all:\n%s", what, timeout, bad, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// fromEveryHost says what of want BIRD lacks: a route from each host,
	// with the host's address as next hop.
	fromEveryHost := func(want ...netip.Prefix) func(map[netip.Prefix][]birdRoute) string {
		return func(rs map[netip.Prefix][]birdRoute) string {
			var bad []string
			for _, p := range want {
				for _, h := range hosts {
					if !slices.ContainsFunc(rs[p], func(r birdRoute) bool { return r.proto == h.Name && r.nextHop == h.Addr }) {
						bad = append(bad, fmt.Sprintf("%s from %s via %s", p, h.Name, h.Addr))
					}
				}
			}
			if len(bad) > 0 {
				return "missing " + strings.Join(bad, ", ")
			}
			return ""
		}
	}
	absent := func(gone ...netip.Prefix) func(map[netip.Prefix][]birdRoute) string {
		return func(rs map[netip.Prefix][]birdRoute) string {
			for _, p := range gone {
				if len(rs[p]) > 0 {
					return fmt.Sprintf("%s still there: %v", p, rs[p])
				}
			}
			return ""
		}
	}
	// blocks says which hosts BIRD has no workload block from.
	blocks := func(rs map[netip.Prefix][]birdRoute) string {
		var bad []string
		for _, h := range hosts {
			found := false
			for p, routes := range rs {
				found = found || p.Bits() == 26 && slices.ContainsFunc(routes, func(r birdRoute) bool { return r.proto == h.Name })
			}
			if !found {
				bad = append(bad, h.Name)
			}
		}
		if len(bad) > 0 {
			return "no workload block from " + strings.Join(bad, ", ")
		}
		return ""
	}
	// kernel is host h's kernel routes inside p.
	kernel := func(h lab.Host, p netip.Prefix) string {
		o, err := exec.Command("ip", "-n", h.Netns, "-4", "route", "show", "root", p.String()).CombinedOutput()
		if err != nil {
			t.Fatalf("ip route in %s: %v\n%s", h.Name, err, o)
		}
		return strings.TrimSpace(string(o))
	}
	// waitKernel polls every host's kernel until ok says it is as wanted.
	waitKernel := func(what string, timeout time.Duration, ok func(h lab.Host) string) time.Duration {
		t.Helper()
		t1 := time.Now()
		for {
			var bad []string
			for _, h := range hosts {
				if b := ok(h); b != "" {
					bad = append(bad, h.Name+": "+b)
				}
			}
			if len(bad) == 0 {
				return time.Since(t1)
			}
			if time.Since(t1) > timeout {
				t.Fatalf("%s: not after %v:\n%s", what, timeout, strings.Join(bad, "\n"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// The topology's BGPConfiguration, kept but for the service ranges.
	var bc v3.BGPConfiguration
	if err := json.Unmarshal([]byte(mustTortie(t, append(cfg, "get", "bgpconfiguration", "default", "-o", "json")...)), &bc); err != nil {
		t.Fatal(err)
	}
	if bc.Spec.ASNumber == nil || bc.Spec.NodeToNodeMeshEnabled == nil || *bc.Spec.NodeToNodeMeshEnabled {
		t.Fatalf("the tor lab's BGPConfiguration default: %+v", bc.Spec)
	}
	apply := func(spec func(*v3.BGPConfigurationSpec)) {
		t.Helper()
		c := bc
		c.ResourceVersion = ""
		spec(&c.Spec)
		b, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "bgpconfig.json")
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		mustTortie(t, append(cfg, "apply", "-f", f)...)
	}

	// A workload on each host: its block is announced too, and must stay.
	for i, h := range hosts {
		addWorkload(t, name, "default", fmt.Sprintf("w%d", i+1), h.Name, "")
	}
	wait("BIRD has every host's workload block", time.Minute, blocks)
	wait("no service ranges before", 5*time.Second, absent(all...))

	t1 := time.Now()
	apply(func(s *v3.BGPConfigurationSpec) {
		s.ServiceClusterIPs = []v3.ServiceClusterIPBlock{{CIDR: clusterIPs.String()}}
		s.ServiceExternalIPs = []v3.ServiceExternalIPBlock{{CIDR: externalIPs.String()}}
		s.ServiceLoadBalancerIPs = []v3.ServiceLoadBalancerIPBlock{{CIDR: lbIPs.String()}}
	})
	took := wait("BIRD learns every range from every host", time.Minute, fromEveryHost(all...))
	t.Logf("timing: applied → BIRD has %d ranges from %d hosts after %v (apply included: %v)",
		len(all), len(hosts), took.Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
	t.Logf("birdc show route:\n%s", birdc("show", "route"))
	wait("the workload blocks stay", 5*time.Second, blocks)
	var after v3.BGPConfiguration
	if err := json.Unmarshal([]byte(mustTortie(t, append(cfg, "get", "bgpconfiguration", "default", "-o", "json")...)), &after); err != nil {
		t.Fatal(err)
	}
	if after.Spec.ASNumber == nil || *after.Spec.ASNumber != *bc.Spec.ASNumber || after.Spec.NodeToNodeMeshEnabled == nil || *after.Spec.NodeToNodeMeshEnabled {
		t.Errorf("BGPConfiguration default lost the topology's fields: %+v", after.Spec)
	}

	// The ToR announces a more specific of the cluster IPs and a range of
	// no service: BIRD reloads its own configuration with one more static
	// protocol (the BGP sessions stay up).
	conf, err := os.ReadFile(filepath.Join(lab.Dir(name), "bird", "bird.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var router string
	if _, err := fmt.Sscanf(string(conf), "router id %s", &router); err != nil {
		t.Fatalf("bird.conf: %v\n%s", err, conf)
	}
	router = strings.TrimSuffix(router, ";")
	extra := filepath.Join(t.TempDir(), "bird.conf")
	if err := os.WriteFile(extra, fmt.Appendf(conf, "protocol static svctest {\n\tipv4;\n\troute %s via %s;\n\troute %s via %s;\n}\n", inside, router, outside, router), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := birdc("configure", `"`+extra+`"`); !strings.Contains(out, "Reconfigured") {
		t.Fatalf("birdc configure:\n%s", out)
	}
	via := func(p netip.Prefix) func(lab.Host) string {
		return func(h lab.Host) string {
			if got := kernel(h, p); !strings.Contains(got, p.String()+" via "+router+" ") {
				return fmt.Sprintf("no %s via %s: %q", p, router, got)
			}
			return ""
		}
	}
	none := func(p netip.Prefix) func(lab.Host) string {
		return func(h lab.Host) string {
			if got := kernel(h, p); got != "" {
				return fmt.Sprintf("routes inside %s: %q", p, got)
			}
			return ""
		}
	}
	took = waitKernel("every host routes the ToR's "+outside.String(), time.Minute, via(outside))
	t.Logf("timing: ToR's routes → in every host's kernel after %v", took.Round(time.Millisecond))
	// Once the control is in, the more specific is known to every host
	// too (one BIRD reload, one update); it must stay out, a while.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, h := range hosts {
			if got := none(clusterIPs)(h); got != "" {
				t.Fatalf("%s programs a route it learned inside serviceClusterIPs %s: %s", h.Name, clusterIPs, got)
			}
		}
	}

	// Removing one range withdraws it from every host; the others stay.
	t2 := time.Now()
	apply(func(s *v3.BGPConfigurationSpec) {
		s.ServiceClusterIPs = []v3.ServiceClusterIPBlock{{CIDR: clusterIPs.String()}}
		s.ServiceLoadBalancerIPs = []v3.ServiceLoadBalancerIPBlock{{CIDR: lbIPs.String()}}
		s.ServiceExternalIPs = nil
	})
	took = wait("BIRD withdraws "+externalIPs.String(), time.Minute, absent(externalIPs))
	t.Logf("timing: serviceExternalIPs removed → withdrawn from BIRD after %v (apply included: %v)",
		took.Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))
	wait("the other ranges stay", 5*time.Second, fromEveryHost(clusterIPs, lbIPs))

	// And all of them, by going back to the topology's own configuration:
	// the more specific is then a route like any other.
	t3 := time.Now()
	apply(func(*v3.BGPConfigurationSpec) {})
	wait("BIRD withdraws every range", time.Minute, absent(all...))
	wait("the workload blocks stay", 5*time.Second, blocks)
	waitKernel("every host routes the ToR's "+inside.String()+" once no service range holds it", time.Minute, via(inside))
	t.Logf("timing: service ranges removed → withdrawn, and the ToR's route programmed, after %v", time.Since(t3).Round(time.Millisecond))
	t.Logf("timing: whole test %v", time.Since(t0).Round(time.Millisecond))
}
