package client

import (
	"context"
	"fmt"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

func benchPolicies(b testing.TB, n int, prefix string) []v3.Resource {
	out := make([]v3.Resource, n)
	for i := range out {
		r, err := v3.Decode(fmt.Appendf(nil, `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"%s-%05d"},
"spec":{"order":%d,"selector":"app == 'a%d' && tier in {'web','api'}","ingress":[{"action":"Allow","protocol":"TCP",
"source":{"selector":"role == 'c%d'","nets":["10.%d.%d.0/24"]},"destination":{"ports":[80,443,"8000:8099"]}}]}}`,
			prefix, i, i, i%97, i%13, i/256%256, i%256))
		if err != nil {
			b.Fatal(err)
		}
		out[i] = r
	}
	return out
}

// BenchmarkApply1000Policies is one `apply` of 1,000 policies: defaulting,
// validation, encoding and one etcd transaction.
func BenchmarkApply1000Policies(b *testing.B) {
	srv := etcdtest.Start(b)
	c := New(etcdtest.NewClient(b, srv))
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		docs := benchPolicies(b, 1000, fmt.Sprintf("r%d", i))
		if _, err := c.Batch(ctx, OpApply, docs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList1000Policies reads and decodes 1,000 stored policies.
func BenchmarkList1000Policies(b *testing.B) {
	srv := etcdtest.Start(b)
	c := New(etcdtest.NewClient(b, srv))
	ctx := context.Background()
	if _, err := c.Batch(ctx, OpApply, benchPolicies(b, 1000, "l")); err != nil {
		b.Fatal(err)
	}
	k, _ := v3.KindByKind(v3.KindGlobalNetworkPolicy)
	b.ReportAllocs()
	for b.Loop() {
		if l, _, err := c.List(ctx, k, ""); err != nil || len(l) != 1000 {
			b.Fatal(len(l), err)
		}
	}
}
