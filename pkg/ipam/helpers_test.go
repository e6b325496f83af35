package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// testEnv is an embedded etcd with a raw backend, a typed client and an
// IPAM client on it.
type testEnv struct {
	t    testing.TB
	ctx  context.Context
	be   *datastore.Etcd
	c    *client.Client
	ipam *IPAM
	ep   string
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	return &testEnv{t: t, ctx: context.Background(), be: be, c: client.New(be), ipam: New(be, Options{}), ep: srv.Endpoint()}
}

func (e *testEnv) pool(name, cidr string, blockSize int, mod ...func(*v3.IPPool)) *v3.IPPool {
	e.t.Helper()
	p := kindOf(v3.KindIPPool).NewObject().(*v3.IPPool)
	p.Name, p.Spec.CIDR, p.Spec.BlockSize = name, cidr, blockSize
	for _, m := range mod {
		m(p)
	}
	r, err := e.c.Create(e.ctx, p)
	if err != nil {
		e.t.Fatalf("create pool %s: %v", name, err)
	}
	return r.(*v3.IPPool)
}

func (e *testEnv) node(name string, labels map[string]string) {
	e.t.Helper()
	n := kindOf(v3.KindNode).NewObject().(*v3.Node)
	n.Name, n.Labels = name, labels
	if _, err := e.c.Create(e.ctx, n); err != nil {
		e.t.Fatalf("create node %s: %v", name, err)
	}
}

func (e *testEnv) reservation(name string, cidrs ...string) {
	e.t.Helper()
	r := kindOf(v3.KindIPReservation).NewObject().(*v3.IPReservation)
	r.Name, r.Spec.ReservedCIDRs = name, cidrs
	if _, err := e.c.Create(e.ctx, r); err != nil {
		e.t.Fatalf("create reservation %s: %v", name, err)
	}
}

// wep writes a workload endpoint using addrs.
func (e *testEnv) wep(node, containerID string, addrs ...netip.Addr) error {
	w := kindOf(v3.KindWorkloadEndpoint).NewObject().(*v3.WorkloadEndpoint)
	w.Namespace = "default"
	w.Name = v3.WorkloadEndpointName(node, v3.OrchestratorCNI, containerID, "eth0")
	w.Spec = v3.WorkloadEndpointSpec{Orchestrator: v3.OrchestratorCNI, Node: node, ContainerID: containerID, Endpoint: "eth0", InterfaceName: "cali0123456789a"}
	for _, a := range addrs {
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, netip.PrefixFrom(a, a.BitLen()).String())
	}
	_, err := e.c.Create(e.ctx, w)
	return err
}

func (e *testEnv) get(key string) string {
	e.t.Helper()
	kv, err := e.be.Get(e.ctx, key)
	if err != nil {
		e.t.Fatalf("get %s: %v", key, err)
	}
	return string(kv.Value)
}

func (e *testEnv) exists(key string) bool {
	e.t.Helper()
	_, err := e.be.Get(e.ctx, key)
	if errors.Is(err, datastore.ErrNotFound) {
		return false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return true
}

func (e *testEnv) put(key string, v any) {
	e.t.Helper()
	b, _ := json.Marshal(v)
	if _, err := e.be.Txn(e.ctx, []datastore.Op{{Type: datastore.OpPut, Key: key, Value: b}}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *testEnv) assign(handle, node string, n4, n6 int) *Assignment {
	e.t.Helper()
	as, err := e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: handle, Node: node, Num4: n4, Num6: n6})
	if err != nil {
		e.t.Fatalf("AutoAssign(%s, %s): %v", handle, node, err)
	}
	return as
}

// auditBlocks reads every block and fails on an address held twice, an
// ordinal both allocated and free, or a handle key that disagrees with
// the blocks. It returns the allocated addresses and their handles.
func auditBlocks(ctx context.Context, t testing.TB, be datastore.Backend) map[netip.Addr]string {
	t.Helper()
	kvs, _, err := be.List(ctx, ipamPrefix)
	if err != nil {
		t.Fatal(err)
	}
	held := map[netip.Addr]string{}
	counts := map[string]map[string]int{}
	handles := map[string]map[string]int{}
	for _, kv := range kvs {
		switch {
		case len(kv.Key) > len(assignmentPrefix) && kv.Key[:len(assignmentPrefix)] == assignmentPrefix:
			b, err := decodeBlock(kv.Key, kv.Value)
			if err != nil {
				t.Fatal(err)
			}
			free := map[int]bool{}
			for _, o := range b.Unallocated {
				if free[o] {
					t.Errorf("block %s: ordinal %d free twice", b.CIDR, o)
				}
				free[o] = true
			}
			for ord, idx := range b.Allocations {
				if (idx != nil) == free[ord] {
					t.Errorf("block %s: ordinal %d allocated=%v free=%v", b.CIDR, ord, idx != nil, free[ord])
				}
				if idx == nil {
					continue
				}
				a := b.addr(ord)
				if h, dup := held[a]; dup {
					t.Errorf("address %s held twice (handles %s and %s)", a, h, b.handleOf(ord))
				}
				held[a] = b.handleOf(ord)
				if counts[b.handleOf(ord)] == nil {
					counts[b.handleOf(ord)] = map[string]int{}
				}
				counts[b.handleOf(ord)][b.CIDR]++
			}
		case len(kv.Key) > len(handlePrefix) && kv.Key[:len(handlePrefix)] == handlePrefix:
			var h handle
			if err := json.Unmarshal(kv.Value, &h); err != nil {
				t.Fatal(err)
			}
			handles[kv.Key[len(handlePrefix):]] = h.Block
		}
	}
	for id, c := range counts {
		if !mapsEqualInt(c, handles[id]) {
			t.Errorf("handle %s: key says %v, blocks hold %v", id, handles[id], c)
		}
	}
	for id, c := range handles {
		if counts[id] == nil {
			t.Errorf("handle %s: key says %v, blocks hold nothing", id, c)
		}
	}
	return held
}

func mapsEqualInt(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
