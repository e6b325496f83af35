package cli

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tortie/tortie/pkg/ipam"
)

const ipamManifest = `apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: cp-pool1
spec:
  cidr: 10.65.0.0/16
  blockSize: 26
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: h1
`

// show prints calicoctl's table; --show-blocks adds the block; --ip says
// who holds an address.
func TestIPAMShow(t *testing.T) {
	e := newEnv(t)
	if _, err := e.run(ipamManifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	a := ipam.New(e.raw, ipam.Options{})
	ctx := t.Context()
	for _, h := range []string{"cp-net.c0ffee0001", "cp-net.c0ffee0002"} {
		if _, err := a.AutoAssign(ctx, ipam.AutoAssignArgs{HandleID: h, Node: "h1", Num4: 1, Attrs: map[string]string{"namespace": "default", "pod": "w1"}}); err != nil {
			t.Fatal(err)
		}
	}
	// calicoctl's columns and alignment (go-pretty: headings left, counts
	// right); COOLING is always 0.
	want := `+----------+--------------+-----------+------------+--------------+--------------+-------------+
| GROUPING | CIDR         | IPS TOTAL | IPS IN USE | IPS RESERVED | IPS FREE     | IPS COOLING |
+----------+--------------+-----------+------------+--------------+--------------+-------------+
| IP Pool  | 10.65.0.0/16 |     65536 |     2 (0%) |       0 (0%) | 65534 (100%) |      0 (0%) |
+----------+--------------+-----------+------------+--------------+--------------+-------------+
`
	if got := e.mustRun("ipam", "show"); got != want {
		t.Errorf("ipam show:\n%s\nwant:\n%s", got, want)
	}
	// Reservations count once however they nest, only inside the pool or
	// block; an address allocated before it was reserved is in use and
	// reserved, and free once less.
	if _, err := e.run(`apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: r1}
spec: {reservedCIDRs: [10.65.0.0/24, 10.65.0.5, 192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: r2}
spec: {reservedCIDRs: [10.65.192.128/30, 10.65.0.0/25]}
`, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	want = `+----------+------------------+-----------+------------+--------------+--------------+-------------+
| GROUPING | CIDR             | IPS TOTAL | IPS IN USE | IPS RESERVED | IPS FREE     | IPS COOLING |
+----------+------------------+-----------+------------+--------------+--------------+-------------+
| IP Pool  | 10.65.0.0/16     |     65536 |     2 (0%) |     260 (0%) | 65276 (100%) |      0 (0%) |
| Block    | 10.65.192.128/26 |        64 |     2 (3%) |       4 (6%) |     60 (94%) |      0 (0%) |
+----------+------------------+-----------+------------+--------------+--------------+-------------+
`
	if got := e.mustRun("ipam", "show", "--show-blocks"); got != want {
		t.Errorf("ipam show --show-blocks:\n%s\nwant:\n%s", got, want)
	}
	got := e.mustRun("ipam", "show", "--ip", "10.65.192.129")
	if !strings.HasPrefix(got, "IP 10.65.192.129 is in use\nHandle ID: cp-net.c0ffee0002\nActive Owner Attributes:\n  namespace: default\n  node: h1\n  pod: w1\n  timestamp: ") {
		t.Errorf("show --ip:\n%s", got)
	}
	if got := e.mustRun("ipam", "show", "--ip", "10.65.0.7"); got != "10.65.0.7 is not assigned\n" {
		t.Errorf("show --ip of a free address: %q", got)
	}
}

// check exits 1 while it reports leaks; --release-leaks frees them (here
// with no grace period); release --ip frees one address.
func TestIPAMCheckReleaseConfigure(t *testing.T) {
	e := newEnv(t)
	if _, err := e.run(ipamManifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if out := e.mustRun("ipam", "check"); !strings.Contains(out, "Check complete; found 0 problems.") {
		t.Errorf("check of an empty datastore:\n%s", out)
	}
	a := ipam.New(e.raw, ipam.Options{})
	ctx := t.Context()
	for _, h := range []string{"n.a", "n.b", "n.c"} {
		if _, err := a.AutoAssign(ctx, ipam.AutoAssignArgs{HandleID: h, Node: "h1", Num4: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// One address is used by a workload endpoint.
	wep := `apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: h1-k8s-w1-eth0
  namespace: default
spec:
  orchestrator: k8s
  node: h1
  pod: w1
  endpoint: eth0
  interfaceName: cali0123456789a
  ipNetworks: ["10.65.192.128/32"]
`
	if _, err := e.run(wep, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	out, err := e.run("", "ipam", "check")
	if !errors.Is(err, errProblemsFound) || !strings.Contains(out, "Found 2 IPs that are allocated in IPAM but not actually in use.") ||
		!strings.Contains(out, "  10.65.192.129 leaked; handle n.b") || strings.Contains(out, "10.65.192.128 leaked") {
		t.Errorf("check with leaks: %v\n%s", err, out)
	}
	// Young leaks stay with the default grace period.
	out, err = e.run("", "ipam", "check", "--release-leaks")
	if !errors.Is(err, errProblemsFound) || !strings.Contains(out, "Released 0 leaked IPs (2 younger than 15m0s") {
		t.Errorf("release within grace: %v\n%s", err, out)
	}
	if out, err = e.run("", "ipam", "release", "--ip", "10.65.192.130"); err != nil || out != "Successfully released IP address 10.65.192.130\n" {
		t.Errorf("release --ip: %v %q", err, out)
	}
	if _, err = e.run("", "ipam", "release", "--ip", "10.65.192.130"); err == nil || err.Error() != "IP address 10.65.192.130 is not assigned" {
		t.Errorf("second release: %v", err)
	}
	out, _ = e.run("", "ipam", "check", "--release-leaks", "--grace-period", "0")
	if !strings.Contains(out, "Released 1 leaked IPs") {
		t.Errorf("release-leaks:\n%s", out)
	}
	if out = e.mustRun("ipam", "check"); !strings.Contains(out, "found 0 problems") {
		t.Errorf("check after release:\n%s", out)
	}
	if info, _ := a.Lookup(ctx, netip.MustParseAddr("10.65.192.128")); info == nil || info.Handle != "n.a" {
		t.Errorf("the workload's address was released: %+v", info)
	}

	out = e.mustRun("ipam", "configure", "--strictaffinity=true", "--max-blocks-per-host", "4")
	if out != "Successfully set StrictAffinity to: true\nSuccessfully set MaxBlocksPerHost to: 4\n" {
		t.Errorf("configure: %q", out)
	}
	kv, err := e.raw.Get(ctx, "/calico/ipam/v2/config")
	if err != nil || string(kv.Value) != `{"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":4,"kubeVirtVMAddressPersistence":"Enabled"}` {
		t.Errorf("config key: %v %s", err, kv.Value)
	}
	if _, err := e.run("", "ipam", "configure", "--strictaffinity=maybe"); err == nil {
		t.Error("configure accepted strictaffinity=maybe")
	}
	if _, err := e.run("", "ipam", "configure"); err == nil {
		t.Error("configure with no option succeeded")
	}
}
