package client

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tortie/tortie/internal/reference"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// tierPrefixValues reads the keys and values of the reference notes' section
// "Names with a tier prefix": what Calico's CLI (v3.34) stored for policies
// named with and without a tier prefix. uid and creationTimestamp are elided
// there ("…"); internal/reference leaves such values out, so this section is
// read here.
func tierPrefixValues(t *testing.T) []reference.KeyValue {
	t.Helper()
	f, err := os.Open(filepath.Join(reference.SharedDir(), "reference", "etcd-layout.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []reference.KeyValue
	in := false
	var key string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.HasPrefix(line, "## Names with a tier prefix")
		case !in:
		case strings.HasPrefix(line, ResourcePrefix):
			key = line
		case key != "" && strings.HasPrefix(line, "{"):
			out = append(out, reference.KeyValue{Key: key, Value: line})
			key = ""
		}
	}
	if len(out) < 7 {
		t.Fatalf("found %d values in the section \"Names with a tier prefix\"", len(out))
	}
	return out
}

// elide replaces uid and creationTimestamp with the notes' "…".
func elide(t *testing.T, value string) string {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal([]byte(value), &obj); err != nil {
		t.Fatal(err)
	}
	md := obj["metadata"].(map[string]any)
	for _, f := range []string{"uid", "creationTimestamp"} {
		value = strings.Replace(value, fmt.Sprintf("%q:%q", f, md[f]), fmt.Sprintf("%q:%q", f, "…"), 1)
	}
	return value
}

// TestPolicyNamesAsCalicoStoresThem writes the policies of the reference
// notes through the client: each lands at exactly Calico's key, with
// exactly Calico's value; then Calico's values, read back, are the same
// policies under the same names, and `get -o yaml | apply` of them works.
func TestPolicyNamesAsCalicoStoresThem(t *testing.T) {
	c, be := newTestClient(t)
	ctx := ctxT(t)
	values := tierPrefixValues(t)
	sec := mustDecode(t, `{"apiVersion":"projectcalico.org/v3","kind":"Tier","metadata":{"name":"sec"},"spec":{"order":100}}`)
	if _, err := c.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	for _, sv := range values {
		if strings.Contains(sv.Key, "/tiers/") {
			continue // made by EnsureInitialized, checked below
		}
		manifest, _ := asManifest(t, strings.NewReplacer(`"uid":"…"`, `"uid":"x"`, `"creationTimestamp":"…"`, `"creationTimestamp":"2026-12-05T00:00:00Z"`).Replace(sv.Value))
		r := mustDecode(t, string(manifest))
		if _, err := c.Create(ctx, r); err != nil {
			t.Fatalf("create %s: %v", r.GetName(), err)
		}
	}
	for _, sv := range values {
		kv, err := be.Get(ctx, sv.Key)
		if err != nil {
			t.Errorf("not at Calico's key %s: %v", sv.Key, err)
			continue
		}
		if got := elide(t, string(kv.Value)); got != sv.Value {
			t.Errorf("%s differs from Calico's\n got: %s\nwant: %s", sv.Key, got, sv.Value)
		}
	}

	// Now the other way: Calico's stored values, read by tortie.
	c2, be2 := newTestClient(t)
	for _, sv := range values {
		v := strings.NewReplacer(`"uid":"…"`, `"uid":"0b5d3f1e-0000-4000-8000-000000000001"`, `"creationTimestamp":"…"`, `"creationTimestamp":"2026-12-05T00:00:00Z"`).Replace(sv.Value)
		if _, err := be2.Create(ctx, sv.Key, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	gnp, _ := v3.KindByKind(v3.KindGlobalNetworkPolicy)
	list, _, err := c2.List(ctx, gnp, "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range list {
		names = append(names, r.GetName())
		got, err := c2.Get(ctx, gnp, "", r.GetName())
		if err != nil || got.GetName() != r.GetName() {
			t.Errorf("get %s: %v, %v", r.GetName(), got, err)
		}
	}
	if want := "default.g-prefixed g-in-tier-plain g-plain sec.g-in-tier"; strings.Join(names, " ") != want {
		t.Errorf("listed %q, want %q", strings.Join(names, " "), want)
	}
	np, _ := v3.KindByKind(v3.KindNetworkPolicy)
	nps, _, err := c2.List(ctx, np, "ns1")
	if err != nil || len(nps) != 2 || nps[0].GetName() != "default.n-prefixed" || nps[1].GetName() != "n-plain" {
		t.Errorf("network policies in ns1: %v, %v", nps, err)
	}

	// get -o yaml | apply -f -: every policy back onto its own key.
	var all []v3.Resource
	for _, k := range []*v3.KindInfo{gnp, np} {
		rs, _, err := c2.List(ctx, k, "")
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rs...)
	}
	policies := func() int {
		n := 0
		for _, k := range []*v3.KindInfo{gnp, np} {
			kvs, _, _ := be2.List(ctx, KindPrefix(k, ""))
			n += len(kvs)
		}
		return n
	}
	before := policies()
	if _, err := c2.Batch(ctx, OpApply, all); err != nil {
		t.Fatalf("re-applying what was listed: %v", err)
	}
	if after := policies(); after != before || before != 6 {
		t.Errorf("%d policy keys before re-applying, %d after; want 6", before, after)
	}
}

// TestTierPrefixNamesAreDistinct: for every policy kind and tier, "<tier>.x"
// and "x" are two policies (Calico's CLI keeps both: applying gnp "dup" and
// then "default.dup" leaves two keys, and get lists both), each reachable,
// changeable and deletable by its own name.
func TestTierPrefixNamesAreDistinct(t *testing.T) {
	c, be := newTestClient(t)
	ctx := ctxT(t)
	if _, err := c.Create(ctx, mustDecode(t, `{"apiVersion":"projectcalico.org/v3","kind":"Tier","metadata":{"name":"sec"},"spec":{"order":100}}`)); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy, v3.KindStagedNetworkPolicy, v3.KindStagedGlobalNetworkPolicy} {
		k, _ := v3.KindByKind(kind)
		ns := ""
		nsField := ""
		if k.Namespaced {
			ns, nsField = "ns1", `"namespace":"ns1",`
		}
		for _, tier := range []string{"default", "sec"} {
			t.Run(kind+"/"+tier, func(t *testing.T) {
				doc := func(name string) v3.Resource {
					return mustDecode(t, fmt.Sprintf(`{"apiVersion":"projectcalico.org/v3","kind":%q,"metadata":{"name":%q,%s"labels":{"n":%q}},"spec":{"tier":%q,"selector":"all()"}}`,
						kind, name, nsField, strings.ReplaceAll(name, ".", "-"), tier))
				}
				plain, prefixed := "zz", tier+".zz"
				if _, err := c.Batch(ctx, OpCreate, []v3.Resource{doc(plain), doc(prefixed)}); err != nil {
					t.Fatalf("both in one batch: %v", err)
				}
				for _, name := range []string{plain, prefixed} {
					if _, err := be.Get(ctx, Key(k, ns, name)); err != nil {
						t.Errorf("%s not at its own key: %v", name, err)
					}
					r, err := c.Get(ctx, k, ns, name)
					if err != nil || r.GetName() != name || r.GetLabels()["n"] != strings.ReplaceAll(name, ".", "-") {
						t.Errorf("get %s: %v, %v", name, r, err)
					}
				}
				if _, err := c.Create(ctx, doc(prefixed)); !errors.Is(err, datastore.ErrAlreadyExists) {
					t.Errorf("second create of %s: %v", prefixed, err)
				}
				if _, err := c.Delete(ctx, k, ns, prefixed, 0); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Get(ctx, k, ns, plain); err != nil {
					t.Errorf("deleting %s took %s with it: %v", prefixed, plain, err)
				}
				if _, err := c.Delete(ctx, k, ns, plain, 0); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
