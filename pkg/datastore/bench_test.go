package datastore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// A value the size of a typical Calico resource.
var benchValue = make([]byte, 600)

// Round trip of a CAS create on the embedded server (one fsync'd etcd
// revision each).
func BenchmarkCreate(b *testing.B) {
	ctx := context.Background()
	c := etcdtest.NewClient(b, etcdtest.Start(b))
	i := 0
	for b.Loop() {
		if _, err := c.Create(ctx, fmt.Sprintf("/bench/%d", i), benchValue); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// Round trip of a linearizable read on the embedded server.
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	c := etcdtest.NewClient(b, etcdtest.Start(b))
	if _, err := c.Create(ctx, "/bench/k", benchValue); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.Get(ctx, "/bench/k"); err != nil {
			b.Fatal(err)
		}
	}
}

// A 1000-resource manifest applied as one transaction; ns/op is per txn.
func BenchmarkTxn1000Creates(b *testing.B) {
	ctx := context.Background()
	c := etcdtest.NewClient(b, etcdtest.Start(b))
	run := 0
	for b.Loop() {
		ops := make([]datastore.Op, 1000)
		for i := range ops {
			ops[i] = datastore.Op{Type: datastore.OpCreate, Key: fmt.Sprintf("/bench/%d/%d", run, i), Value: benchValue}
		}
		if _, err := c.Txn(ctx, ops); err != nil {
			b.Fatal(err)
		}
		run++
	}
}
