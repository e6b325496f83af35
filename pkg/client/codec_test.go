package client

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// encodeViaJSONCopy is encode as it was when it worked on a copy made by a
// JSON round trip of r.
func encodeViaJSONCopy(t *testing.T, r v3.Resource) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	obj := v3.KindOf(r).NewObject()
	if err := json.Unmarshal(b, obj); err != nil {
		t.Fatal(err)
	}
	storedForm(obj)
	out, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEncodeLeavesResourceAlone: encode writes what encoding a deep copy
// wrote, for every kind Calico stores, and does not change the resource.
func TestEncodeLeavesResourceAlone(t *testing.T) {
	var rs []v3.Resource
	for _, sv := range calicoValues(t) {
		name := strings.TrimPrefix(sv.Key, ResourcePrefix)
		var k *v3.KindInfo
		for _, ki := range v3.Kinds() {
			if ki.Plural == name[:strings.Index(name, "/")] {
				k = ki
			}
		}
		if k == nil {
			t.Fatalf("%s: no kind", sv.Key)
		}
		r, err := decode(k, &datastore.KV{Key: sv.Key, Value: []byte(sv.Value), Revision: 7})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	rs = append(rs, benchPolicies(t, 3, "e")...)
	if len(rs) < 20 {
		t.Fatalf("only %d resources", len(rs))
	}
	for _, r := range rs {
		v3.SetDefaults(r)
		if r.GetUID() == "" {
			stamp(r, nil, metav1.NewTime(time.Unix(1700000000, 0)))
		}
		before, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		labels, ann := r.GetLabels(), r.GetAnnotations()
		want := encodeViaJSONCopy(t, r)
		_, got, err := encode(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s %s: encoded\n%s\nwant\n%s", v3.KindOf(r).Kind, r.GetName(), got, want)
		}
		after, _ := json.Marshal(r)
		if !bytes.Equal(before, after) || !reflect.DeepEqual(labels, r.GetLabels()) || !reflect.DeepEqual(ann, r.GetAnnotations()) {
			t.Errorf("%s %s: encode changed the resource\n%s\n%s", v3.KindOf(r).Kind, r.GetName(), before, after)
		}
	}
}
