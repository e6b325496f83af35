package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

func poolSpecDoc(name, spec string) string {
	return fmt.Sprintf(`{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":%q},"spec":%s}`, name, spec)
}

const (
	tierSec   = `{"apiVersion":"projectcalico.org/v3","kind":"Tier","metadata":{"name":"sec"},"spec":{"order":10}}`
	policySec = `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"sec.p"},"spec":{"tier":"sec"}}`
)

// TestDatastoreRules is every rule Calico's client enforces against what is
// stored, each with the verdict Calico gives (from its source, libcalico-go
// lib/clientv3 and lib/validator/v3, named per case) and tortie's, which
// must be the same: refused with Calico's reason naming the field, or
// accepted. A refused write leaves the store exactly as it was.
func TestDatastoreRules(t *testing.T) {
	cases := []struct {
		name   string
		stored []string // applied first
		raw    map[string]string
		do     func(c *Client) error
		// calico: "" when Calico accepts; else the reason it gives.
		calico string
		field  string
	}{
		// clientv3 ippool.go validateAndSetDefaults, update: "IPPool BlockSize cannot be modified".
		{name: "patch pool blockSize", stored: []string{poolDoc("default-ipv4-ippool", "192.168.0.0/16")},
			do: patch("default-ipv4-ippool", `{"spec":{"blockSize":28}}`), calico: "IPPool BlockSize cannot be modified", field: "spec.blockSize"},
		// Same function: "IPPool CIDR cannot be modified".
		{name: "patch pool cidr", stored: []string{poolDoc("default-ipv4-ippool", "192.168.0.0/16")},
			do: patch("default-ipv4-ippool", `{"spec":{"cidr":"192.168.0.0/17"}}`), calico: "IPPool CIDR cannot be modified", field: "spec.cidr"},
		{name: "replace pool with another cidr", stored: []string{poolDoc("p1", "10.1.0.0/16")},
			do: batch(OpReplace, poolDoc("p1", "10.2.0.0/16")), calico: "IPPool CIDR cannot be modified", field: "spec.cidr"},
		// Other fields may change; an unset blockSize defaults to the stored one's (26).
		{name: "apply pool with other fields", stored: []string{poolDoc("p1", "10.1.0.0/16")},
			do: batch(OpApply, poolSpecDoc("p1", `{"cidr":"10.1.0.0/16","natOutgoing":true,"disabled":true}`))},
		{name: "patch pool natOutgoing", stored: []string{poolDoc("p1", "10.1.0.0/16")},
			do: patch("p1", `{"spec":{"natOutgoing":true}}`)},
		// A pool stored without blockSize has the default, as Calico reads it (convertIpPoolFromStorage).
		{name: "apply over pool stored without blockSize",
			raw: map[string]string{ResourcePrefix + "ippools/old": `{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"old"},"spec":{"cidr":"10.7.0.0/16"}}`},
			do:  batch(OpApply, poolDoc("old", "10.7.0.0/16"))},
		// clientv3 ippool.go, create: "IPPool(new) CIDR overlaps with IPPool(other) CIDR x".
		{name: "create pool inside another", stored: []string{poolDoc("default-ipv4-ippool", "192.168.0.0/16")},
			do: batch(OpCreate, poolDoc("inner", "192.168.4.0/24")), calico: "IPPool(inner) CIDR overlaps with IPPool(default-ipv4-ippool) CIDR 192.168.0.0/16", field: "spec.cidr"},
		{name: "apply pool around another", stored: []string{poolDoc("p1", "10.1.0.0/16")},
			do: batch(OpApply, poolDoc("outer", "10.0.0.0/8")), calico: "IPPool(outer) CIDR overlaps with IPPool(p1) CIDR 10.1.0.0/16", field: "spec.cidr"},
		{name: "create pool with the same cidr", stored: []string{poolDoc("p1", "10.1.0.0/16")},
			do: batch(OpCreate, poolDoc("p2", "10.1.0.0/16")), calico: "IPPool(p2) CIDR overlaps with IPPool(p1) CIDR 10.1.0.0/16", field: "spec.cidr"},
		{name: "create adjacent pool", stored: []string{poolDoc("p1", "10.1.0.0/16")},
			do: batch(OpCreate, poolDoc("p2", "10.2.0.0/16"))},
		{name: "create v6 pool beside v4", stored: []string{poolDoc("p1", "10.1.0.0/16")},
			do: batch(OpCreate, poolDoc("p6", "fd00:1::/64"))},
		// Calico's CLI creates a file's documents in order: the second sees the first.
		{name: "two overlapping pools in one file",
			do: batch(OpCreate, poolDoc("a", "10.3.0.0/16"), poolDoc("b", "10.3.128.0/17")), calico: "IPPool(b) CIDR overlaps with IPPool(a) CIDR 10.3.0.0/16", field: "spec.cidr"},
		// Applying an existing pool updates it: no overlap with itself (Calico skips its own name).
		{name: "re-apply existing pool", stored: []string{poolDoc("p1", "10.1.0.0/16")},
			do: batch(OpApply, poolDoc("p1", "10.1.0.0/16"))},
		// clientv3 ippool.go Create: "IPPool blocksSize conflicts with existing allocations that use a different blockSize".
		{name: "create pool over blocks of another size",
			raw: map[string]string{ipamBlockPrefix + "ipv4/block/10.5.0.0-24": `{"cidr":"10.5.0.0/24"}`},
			do:  batch(OpCreate, poolDoc("p5", "10.5.0.0/16")), calico: "IPPool blocksSize conflicts with existing allocations that use a different blockSize", field: "spec.blockSize"},
		{name: "create pool over blocks of its size",
			raw: map[string]string{ipamBlockPrefix + "ipv4/block/10.5.0.0-24": `{"cidr":"10.5.0.0/24"}`},
			do:  batch(OpCreate, poolSpecDoc("p5", `{"cidr":"10.5.0.0/16","blockSize":24}`))},
		// Calico's validation (its CRD rules on allowedUses): no namespaceSelector on a pool that hands out Tunnel addresses.
		{name: "pool with namespaceSelector and default allowedUses",
			do: batch(OpCreate, poolSpecDoc("ns", `{"cidr":"10.6.0.0/16","namespaceSelector":"team == 'a'"}`)), calico: "allowedUses Tunnel cannot have a namespaceSelector", field: "spec.namespaceSelector"},
		{name: "pool with namespaceSelector for workloads only",
			do: batch(OpCreate, poolSpecDoc("ns", `{"cidr":"10.6.0.0/16","namespaceSelector":"team == 'a'","allowedUses":["Workload"]}`))},
		// clientv3 tier.go Delete: "Cannot delete default tier" (and the other built-in tiers).
		{name: "delete default tier", stored: []string{tierSec},
			do: del(v3.KindTier, "default"), calico: "operation Delete is not supported on default: Cannot delete default tier"},
		{name: "delete kube-admin tier", stored: []string{tierSec},
			do: del(v3.KindTier, "kube-admin"), calico: "Cannot delete kube-admin tier"},
		// clientv3 tier.go Delete: "Cannot delete a non-empty tier".
		{name: "delete tier with a policy", stored: []string{tierSec, policySec},
			do: del(v3.KindTier, "sec"), calico: "operation delete is not supported on sec: Cannot delete a non-empty tier"},
		{name: "delete tier after its policy in one file", stored: []string{tierSec, policySec},
			do: batch(OpDelete, policySec, tierSec)},
		// clientv3 profile.go: the built-in profile cannot be created, updated or deleted.
		{name: "create default-allow profile",
			do: batch(OpCreate, `{"apiVersion":"projectcalico.org/v3","kind":"Profile","metadata":{"name":"projectcalico-default-allow"}}`), calico: "resource already exists: projectcalico-default-allow"},
		{name: "apply default-allow profile",
			do: batch(OpApply, `{"apiVersion":"projectcalico.org/v3","kind":"Profile","metadata":{"name":"projectcalico-default-allow"}}`), calico: `operation Update is not supported on projectcalico-default-allow: The profile "projectcalico-default-allow" is a default provided by Calico and cannot be updated`},
		{name: "delete default-allow profile",
			do: del(v3.KindProfile, DefaultAllowProfileName), calico: `The profile "projectcalico-default-allow" is a default provided by Calico and cannot be deleted`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, be := newTestClient(t)
			ctx := ctxT(t)
			for _, d := range tc.stored {
				if _, err := c.Apply(ctx, mustDecode(t, d)); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			for k, v := range tc.raw {
				if _, err := be.Create(ctx, k, []byte(v)); err != nil {
					t.Fatal(err)
				}
			}
			before, _, _ := be.List(ctx, "/calico/")
			err := tc.do(c)
			if tc.calico == "" {
				if err != nil {
					t.Fatalf("Calico accepts this; tortie refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.calico) {
				t.Fatalf("Calico refuses with %q; tortie said %v", tc.calico, err)
			}
			if tc.field != "" && !strings.Contains(err.Error(), tc.field+":") {
				t.Errorf("error %q does not name the field %s", err, tc.field)
			}
			after, _, _ := be.List(ctx, "/calico/")
			if fmt.Sprint(kvRevisions(before)) != fmt.Sprint(kvRevisions(after)) {
				t.Errorf("a refused write changed the store:\nbefore %v\n after %v", kvRevisions(before), kvRevisions(after))
			}
		})
	}
}

func kvRevisions(kvs []*datastore.KV) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = fmt.Sprintf("%s@%d", kv.Key, kv.Revision)
	}
	return out
}

func patch(name, p string) func(*Client) error {
	return func(c *Client) error {
		k, _ := v3.KindByKind(v3.KindIPPool)
		_, err := c.Patch(ctxBackground(), k, "", name, []byte(p))
		return err
	}
}

func batch(op Op, docs ...string) func(*Client) error {
	return func(c *Client) error {
		var rs []v3.Resource
		for _, d := range docs {
			r, err := v3.Decode([]byte(d))
			if err != nil {
				return err
			}
			rs = append(rs, r)
		}
		_, err := c.Batch(ctxBackground(), op, rs)
		return err
	}
}

func del(kind, name string) func(*Client) error {
	return func(c *Client) error {
		k, _ := v3.KindByKind(kind)
		_, err := c.Delete(ctxBackground(), k, "", name, 0)
		return err
	}
}

// TestConcurrentOverlappingPools: pools whose CIDRs overlap, created at the
// same moment by separate clients: exactly one of them is created, every
// round, because each write is conditional on the pools it checked.
func TestConcurrentOverlappingPools(t *testing.T) {
	_, be := newTestClient(t)
	ctx := ctxT(t)
	for round := range 10 {
		outer := fmt.Sprintf("10.%d.0.0/16", 100+round)
		inner := fmt.Sprintf("10.%d.1.0/24", 100+round)
		docs := []string{poolDoc(fmt.Sprintf("r%d-a", round), outer), poolDoc(fmt.Sprintf("r%d-b", round), inner), poolDoc(fmt.Sprintf("r%d-c", round), outer)}
		errs := make([]error, len(docs))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, d := range docs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := New(be) // a separate client, as a separate process would be
				r := mustDecode(t, d)
				<-start
				_, errs[i] = c.Create(ctx, r)
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case strings.Contains(err.Error(), "overlaps with IPPool"), errors.Is(err, datastore.ErrConflict):
			default:
				t.Errorf("round %d: %v", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d of %d overlapping pools created (%v); want exactly one", round, won, len(docs), errs)
		}
	}
	k, _ := v3.KindByKind(v3.KindIPPool)
	list, _, _ := New(be).List(ctx, k, "")
	if len(list) != 10 {
		t.Errorf("%d pools stored, want 10", len(list))
	}
}

// TestDefaultAllowProfile: Calico's clients show projectcalico-default-allow
// (allow everything both ways) without it being stored.
func TestDefaultAllowProfile(t *testing.T) {
	c, be := newTestClient(t)
	ctx := ctxT(t)
	k, _ := v3.KindByKind(v3.KindProfile)
	r, err := c.Get(ctx, k, "", DefaultAllowProfileName)
	if err != nil {
		t.Fatal(err)
	}
	p := r.(*v3.Profile)
	if len(p.Spec.Ingress) != 1 || p.Spec.Ingress[0].Action != v3.Allow || len(p.Spec.Egress) != 1 || p.Spec.Egress[0].Action != v3.Allow {
		t.Errorf("built-in profile %+v", p.Spec)
	}
	if _, err := c.Create(ctx, mustDecode(t, `{"apiVersion":"projectcalico.org/v3","kind":"Profile","metadata":{"name":"mine"}}`)); err != nil {
		t.Fatal(err)
	}
	list, _, err := c.List(ctx, k, "")
	if err != nil || len(list) != 2 || list[0].GetName() != "mine" || list[1].GetName() != DefaultAllowProfileName {
		t.Errorf("profiles listed: %v, %v", list, err)
	}
	if kvs, _, _ := be.List(ctx, KindPrefix(k, "")); len(kvs) != 1 {
		t.Errorf("%d profiles stored, want only mine", len(kvs))
	}
	if _, err := c.Create(ctx, mustDecode(t, `{"apiVersion":"projectcalico.org/v3","kind":"Profile","metadata":{"name":"projectcalico-default-allow"}}`)); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Errorf("create: %v, want already exists", err)
	}
	if _, err := c.Delete(ctx, k, "", DefaultAllowProfileName, 0); !errors.Is(err, ErrNotSupported) {
		t.Errorf("delete: %v, want not supported", err)
	}
}

func ctxBackground() context.Context { return context.Background() }

// TestNewerCalicoFieldsRoundTrip: fields of Calico v3.33/v3.34 are decoded,
// stored and read back unchanged.
func TestNewerCalicoFieldsRoundTrip(t *testing.T) {
	c, be := newTestClient(t)
	ctx := ctxT(t)
	docs := map[string]string{
		ResourcePrefix + "bgpconfigurations/default":   `{"apiVersion":"projectcalico.org/v3","kind":"BGPConfiguration","metadata":{"name":"default"},"spec":{"programClusterRoutes":"EnabledNoEncapOnly","ipv4NormalRoutePriority":1024,"ipv6NormalRoutePriority":1024}}`,
		ResourcePrefix + "felixconfigurations/default": `{"apiVersion":"projectcalico.org/v3","kind":"FelixConfiguration","metadata":{"name":"default"},"spec":{"programClusterRoutes":"EnabledIPIPOnly","bpfKubeProxyHealthzPort":10256,"bpfMaglevMaxEndpointsPerService":100,"bpfMaglevMaxServices":100,"ipv4NormalRoutePriority":1024,"ipv4ElevatedRoutePriority":512,"ipv6NormalRoutePriority":1024,"ipv6ElevatedRoutePriority":512,"liveMigrationRouteConvergenceTime":"30s"}}`,
	}
	for key, d := range docs {
		r := mustDecode(t, d)
		if _, err := c.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		kv, err := be.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		var in, stored map[string]any
		_ = json.Unmarshal([]byte(d), &in)
		_ = json.Unmarshal(kv.Value, &stored)
		for field, want := range in["spec"].(map[string]any) {
			if got := stored["spec"].(map[string]any)[field]; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: spec.%s stored as %v, want %v", key, field, got, want)
			}
		}
	}
}
