package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/reference"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// calicoValues reads every v3 resource value observed on real Calico.
func calicoValues(t *testing.T) []reference.KeyValue {
	t.Helper()
	kvs, err := reference.StoredResources()
	if err != nil {
		t.Fatal(err)
	}
	return kvs
}

func newTestClient(t *testing.T) (*Client, *datastore.Etcd) {
	t.Helper()
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	return New(be), be
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// asManifest turns a stored value back into what a user would have applied:
// no identity, none of the labels and annotations the client adds.
func asManifest(t *testing.T, value string) ([]byte, time.Time) {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal([]byte(value), &obj); err != nil {
		t.Fatal(err)
	}
	md := obj["metadata"].(map[string]any)
	ts, err := time.Parse(time.RFC3339, md["creationTimestamp"].(string))
	if err != nil {
		t.Fatal(err)
	}
	delete(md, "uid")
	delete(md, "creationTimestamp")
	if labels, ok := md["labels"].(map[string]any); ok {
		for _, l := range []string{TierLabel, WorkloadNamespaceLabel, WorkloadOrchestratorLabel} {
			delete(labels, l)
		}
		if len(labels) == 0 {
			delete(md, "labels")
		}
	}
	delete(md, "annotations")
	b, _ := json.Marshal(obj)
	return b, ts
}

// TestStoredExactlyAsCalico writes every resource of the reference through the
// client and checks etcd holds byte for byte what real Calico stored (bar the
// random uid and cluster GUID).
func TestStoredExactlyAsCalico(t *testing.T) {
	c, be := newTestClient(t)
	ctx := ctxT(t)
	values := calicoValues(t)
	var initial []reference.KeyValue
	for _, sv := range values {
		if strings.Contains(sv.Key, "/clusterinformations/") || strings.HasSuffix(sv.Key, "/tiers/default") ||
			strings.HasSuffix(sv.Key, "/tiers/kube-admin") || strings.HasSuffix(sv.Key, "/tiers/kube-baseline") {
			initial = append(initial, sv) // written by EnsureInitialized
			continue
		}
		t.Run(strings.TrimPrefix(sv.Key, ResourcePrefix), func(t *testing.T) {
			manifest, ts := asManifest(t, sv.Value)
			r, err := v3.Decode(manifest)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			c.Now = func() time.Time { return ts }
			if _, err := c.Create(ctx, r); err != nil {
				t.Fatalf("create: %v", err)
			}
			kv, err := be.Get(ctx, sv.Key)
			if err != nil {
				t.Fatalf("not at Calico's key: %v", err)
			}
			got := withSameIdentity(t, string(kv.Value), sv.Value)
			if got != sv.Value {
				t.Errorf("stored value differs from Calico's\n got: %s\nwant: %s", got, sv.Value)
			}
		})
	}
	for _, sv := range initial {
		kv, err := be.Get(ctx, sv.Key)
		if err != nil {
			t.Errorf("%s not created on first write: %v", sv.Key, err)
			continue
		}
		got := withSameIdentity(t, string(kv.Value), sv.Value)
		if got != sv.Value {
			t.Errorf("%s differs\n got: %s\nwant: %s", sv.Key, got, sv.Value)
		}
	}
}

// withSameIdentity copies uid, creationTimestamp and clusterGUID from want
// into got, the only parts that are random or time-dependent.
func withSameIdentity(t *testing.T, got, want string) string {
	t.Helper()
	var g, w map[string]any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal([]byte(want), &w)
	gm, wm := g["metadata"].(map[string]any), w["metadata"].(map[string]any)
	for _, f := range []string{"uid", "creationTimestamp"} {
		if gm[f] == nil || gm[f] == "" {
			t.Errorf("stored value has no metadata.%s", f)
		}
		got = strings.Replace(got, fmt.Sprintf("%q:%q", f, gm[f]), fmt.Sprintf("%q:%q", f, wm[f]), 1)
	}
	if gs, ok := g["spec"].(map[string]any); ok {
		if guid, ok := gs["clusterGUID"].(string); ok {
			got = strings.Replace(got, guid, w["spec"].(map[string]any)["clusterGUID"].(string), 1)
		}
	}
	return got
}

// TestReadsCalicoData reads values exactly as Calico wrote them: names come
// back from the metadata annotation, which is hidden, and resourceVersion is
// the key's revision.
func TestReadsCalicoData(t *testing.T) {
	c, be := newTestClient(t)
	ctx := ctxT(t)
	for _, sv := range calicoValues(t) {
		if _, err := be.Create(ctx, sv.Key, []byte(sv.Value)); err != nil {
			t.Fatal(err)
		}
	}
	gnp, _ := v3.KindByKind(v3.KindGlobalNetworkPolicy)
	r, err := c.Get(ctx, gnp, "", "cp-tier1.allow-ssh")
	if err != nil {
		t.Fatal(err)
	}
	kv, _ := be.Get(ctx, ResourcePrefix+"globalnetworkpolicies/cp-tier1.allow-ssh")
	if r.GetResourceVersion() != fmt.Sprint(kv.Revision) {
		t.Errorf("resourceVersion %s, want mod revision %d", r.GetResourceVersion(), kv.Revision)
	}
	if _, ok := r.GetAnnotations()[MetadataAnnotation]; ok {
		t.Errorf("metadata annotation shown to the user")
	}
	if r.(v3.Tiered).PolicyTier() != "cp-tier1" {
		t.Errorf("tier %q", r.(v3.Tiered).PolicyTier())
	}
	// An update through tortie keeps Calico's uid and creation time.
	uid, created := r.GetUID(), r.GetCreationTimestamp()
	r.SetLabels(map[string]string{"team": "net"})
	up, err := c.Update(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if up.GetUID() != uid || !up.GetCreationTimestamp().Time.Equal(created.Time) {
		t.Errorf("identity changed on update: %s %v", up.GetUID(), up.GetCreationTimestamp())
	}
	// Every kind lists and decodes.
	for _, k := range v3.Kinds() {
		if _, _, err := c.List(ctx, k, ""); err != nil {
			t.Errorf("list %s: %v", k.Plural, err)
		}
	}
	weps, _ := v3.KindByKind(v3.KindWorkloadEndpoint)
	list, _, err := c.List(ctx, weps, "default")
	if err != nil || len(list) != 1 || list[0].GetName() != "h1-k8s-w1-eth0" {
		t.Errorf("workload endpoints in default: %v %v", list, err)
	}
}

func mustDecode(t *testing.T, doc string) v3.Resource {
	t.Helper()
	r, err := v3.Decode([]byte(doc))
	if err != nil {
		t.Fatalf("decode %q: %v", doc, err)
	}
	return r
}

func gnpDoc(name, tier string) string {
	return fmt.Sprintf(`{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":%q},"spec":{"tier":%q,"selector":"all()"}}`, name, tier)
}

func poolDoc(name, cidr string) string {
	return fmt.Sprintf(`{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":%q},"spec":{"cidr":%q}}`, name, cidr)
}

func TestCompareAndSwap(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := ctxT(t)
	created, err := c.Create(ctx, mustDecode(t, poolDoc("p1", "10.1.0.0/16")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, mustDecode(t, poolDoc("p1", "10.1.0.0/16"))); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Errorf("second create: %v, want already exists", err)
	}
	// Two writers start from the same revision: the second loses.
	a := mustDecode(t, poolDoc("p1", "10.1.0.0/16"))
	a.SetResourceVersion(created.GetResourceVersion())
	a.SetLabels(map[string]string{"w": "a"})
	b := mustDecode(t, poolDoc("p1", "10.1.0.0/16"))
	b.SetResourceVersion(created.GetResourceVersion())
	if _, err := c.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctx, b); !errors.Is(err, datastore.ErrConflict) {
		t.Errorf("stale update: %v, want conflict", err)
	}
	k := v3.KindOf(a)
	if _, err := c.Delete(ctx, k, "", "p1", 1); !errors.Is(err, datastore.ErrConflict) {
		t.Errorf("delete at stale revision: %v, want conflict", err)
	}
	if _, err := c.Delete(ctx, k, "", "p1", 0); err != nil {
		t.Errorf("delete: %v", err)
	}
	if _, err := c.Get(ctx, k, "", "p1"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	if _, err := c.Update(ctx, mustDecode(t, poolDoc("p1", "10.1.0.0/16"))); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("replace of a missing resource: %v", err)
	}
}

func TestBatchAllOrNothing(t *testing.T) {
	c, be := newTestClient(t)
	ctx := ctxT(t)
	good := mustDecode(t, poolDoc("good", "10.2.0.0/16"))
	bad := mustDecode(t, poolDoc("bad", "10.3.0.1/16"))
	_, err := c.Batch(ctx, OpApply, []v3.Resource{good, bad})
	var derrs DocErrors
	if !errors.As(err, &derrs) || len(derrs) != 1 || derrs[0].Index != 1 || !strings.Contains(err.Error(), "spec.cidr") {
		t.Fatalf("want one error for document 1 naming spec.cidr, got %v", err)
	}
	if kvs, _, _ := be.List(ctx, "/calico/"); len(kvs) != 0 {
		t.Errorf("%d keys written by a failed batch", len(kvs))
	}
	// The same name twice in one batch.
	_, err = c.Batch(ctx, OpApply, []v3.Resource{good, mustDecode(t, poolDoc("good", "10.2.0.0/16"))})
	if !errors.As(err, &derrs) || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate: %v", err)
	}
	// A create that collides at write time leaves nothing of the batch.
	if _, err := c.Create(ctx, mustDecode(t, poolDoc("taken", "10.9.0.0/16"))); err != nil {
		t.Fatal(err)
	}
	_, err = c.Batch(ctx, OpCreate, []v3.Resource{good, mustDecode(t, poolDoc("taken", "10.9.0.0/16"))})
	var be2 *BatchError
	if !errors.As(err, &be2) || be2.Failed != 1 || len(be2.Written) != 0 || !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Fatalf("collision: %v", err)
	}
	k, _ := v3.KindByKind(v3.KindIPPool)
	if _, err := c.Get(ctx, k, "", "good"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("document 0 written although document 1 failed: %v", err)
	}
}

// TestBatchSplitsForSmallServers: against a server with etcd's stock limit
// a large manifest goes in chunks; a failure names what was written.
func TestBatchSplitsForSmallServers(t *testing.T) {
	srv := etcdtest.StartWith(t, embedded.ServeConfig{MaxTxnOps: 8})
	c := New(etcdtest.NewClient(t, srv))
	ctx := ctxT(t)
	var docs []v3.Resource
	for i := range 50 {
		docs = append(docs, mustDecode(t, gnpDoc(fmt.Sprintf("p%02d", i), "default")))
	}
	res, err := c.Batch(ctx, OpApply, docs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Txns < 7 {
		t.Errorf("%d transactions for 50 documents at 8 per transaction", res.Txns)
	}
	k, _ := v3.KindByKind(v3.KindGlobalNetworkPolicy)
	if list, _, _ := c.List(ctx, k, ""); len(list) != 50 {
		t.Errorf("%d policies stored, want 50", len(list))
	}
	// Now create 20 where the 14th exists: the first chunks land, and the
	// error says which.
	if _, err := c.Create(ctx, mustDecode(t, gnpDoc("q13", "default"))); err != nil {
		t.Fatal(err)
	}
	docs = docs[:0]
	for i := range 20 {
		docs = append(docs, mustDecode(t, gnpDoc(fmt.Sprintf("q%02d", i), "default")))
	}
	_, err = c.Batch(ctx, OpCreate, docs)
	var be *BatchError
	if !errors.As(err, &be) || be.Failed != 13 {
		t.Fatalf("want failure at document 13, got %v", err)
	}
	if len(be.Written) == 0 || be.Written[len(be.Written)-1] >= 13 {
		t.Errorf("written %v", be.Written)
	}
	for _, i := range be.Written {
		if _, err := c.Get(ctx, k, "", fmt.Sprintf("q%02d", i)); err != nil {
			t.Errorf("reported written but missing: q%02d", i)
		}
	}
}

func TestLabelAndPatch(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := ctxT(t)
	if _, err := c.Create(ctx, mustDecode(t, poolDoc("p", "10.4.0.0/16"))); err != nil {
		t.Fatal(err)
	}
	k, _ := v3.KindByKind(v3.KindIPPool)
	steps := []struct {
		ch      LabelChange
		wantErr string
		want    map[string]string
	}{
		{LabelChange{Key: "rack", Value: "r1"}, "", map[string]string{"rack": "r1"}},
		{LabelChange{Key: "rack", Value: "r1"}, "", map[string]string{"rack": "r1"}},
		{LabelChange{Key: "rack", Value: "r2"}, "--overwrite", nil},
		{LabelChange{Key: "rack", Value: "r2", Overwrite: true}, "", map[string]string{"rack": "r2"}},
		{LabelChange{Key: "rack", Remove: true}, "", nil},
		{LabelChange{Key: "rack", Remove: true}, "has no label", nil},
	}
	for i, s := range steps {
		r, err := c.Label(ctx, k, "", "p", s.ch)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Errorf("step %d: err %v, want %q", i, err, s.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if fmt.Sprint(r.GetLabels()) != fmt.Sprint(s.want) {
			t.Errorf("step %d: labels %v, want %v", i, r.GetLabels(), s.want)
		}
	}
	r, err := c.Patch(ctx, k, "", "p", []byte(`{"spec":{"natOutgoing":true,"disabled":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !r.(*v3.IPPool).Spec.NATOutgoing || !r.(*v3.IPPool).Spec.Disabled {
		t.Errorf("patch not applied: %+v", r.(*v3.IPPool).Spec)
	}
	for _, bad := range []struct{ patch, want string }{
		{`{"spec":{"cidr":"10.4.0.1/16"}}`, "spec.cidr"},
		{`{"spec":{"bogus":1}}`, "spec.bogus"},
		{`{"metadata":{"name":"other"}}`, "metadata.name"},
		{`[1]`, "JSON object"},
	} {
		if _, err := c.Patch(ctx, k, "", "p", []byte(bad.patch)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("patch %s: %v, want error naming %s", bad.patch, err, bad.want)
		}
	}
}

func TestTierDeletion(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := ctxT(t)
	tier := mustDecode(t, `{"apiVersion":"projectcalico.org/v3","kind":"Tier","metadata":{"name":"sec"},"spec":{"order":10}}`)
	if _, err := c.Batch(ctx, OpApply, []v3.Resource{tier, mustDecode(t, gnpDoc("sec.p", "sec"))}); err != nil {
		t.Fatal(err)
	}
	k := v3.KindOf(tier)
	if _, err := c.Delete(ctx, k, "", "default", 0); err == nil || !strings.Contains(err.Error(), "Cannot delete default tier") {
		t.Errorf("deleting the default tier: %v", err)
	}
	if _, err := c.Delete(ctx, k, "", "sec", 0); err == nil || !strings.Contains(err.Error(), "sec.p") {
		t.Errorf("deleting a tier with a policy: %v", err)
	}
	gnp, _ := v3.KindByKind(v3.KindGlobalNetworkPolicy)
	if _, err := c.Delete(ctx, gnp, "", "sec.p", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, k, "", "sec", 0); err != nil {
		t.Errorf("deleting an empty tier: %v", err)
	}
}

func TestMergePatch(t *testing.T) {
	cases := []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	}
	for _, c := range cases {
		var target, patch any
		_ = json.Unmarshal([]byte(c.target), &target)
		_ = json.Unmarshal([]byte(c.patch), &patch)
		got, _ := json.Marshal(MergePatch(target, patch))
		if string(got) != c.want {
			t.Errorf("%s + %s = %s, want %s", c.target, c.patch, got, c.want)
		}
	}
}
