package syncer_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/syncer"
)

// The kinds the policy agent watches.
var policyKinds = []string{
	v3.KindWorkloadEndpoint, v3.KindHostEndpoint, v3.KindNetworkSet, v3.KindGlobalNetworkSet,
	v3.KindProfile, v3.KindTier, v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy, v3.KindIPPool,
}

func apply(t *testing.T, cl *client.Client, docs ...string) {
	t.Helper()
	for _, d := range docs {
		r, err := v3.Decode([]byte(d))
		if err != nil {
			t.Fatalf("decode %s: %v", d, err)
		}
		if _, err := cl.Apply(context.Background(), r); err != nil {
			t.Fatalf("apply %s: %v", d, err)
		}
	}
}

func del(t *testing.T, cl *client.Client, kind, ns, name string) {
	t.Helper()
	k, _ := v3.KindByKind(kind)
	if _, err := cl.Delete(context.Background(), k, ns, name, 0); err != nil {
		t.Fatalf("delete %s %s/%s: %v", kind, ns, name, err)
	}
}

func wep(pod, ip string, labels string) string {
	return fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: ns1, labels: {%s}}
spec: {node: h1, orchestrator: k8s, pod: %s, endpoint: eth0, interfaceName: cali%s, ipNetworks: [%s/32], profiles: [kns.ns1]}
`, labels, pod, pod, ip)
}

func netpol(name, sel string) string {
	return fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: ns1, name: %s}
spec:
  selector: %q
  ingress: [{action: Allow, source: {selector: "role == 'client'"}}]
`, name, sel)
}

const gnpDoc = `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-db}
spec: {selector: "role == 'db'", ingress: [{action: Deny}]}
`

const profileDoc = `
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.ns1}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}
`

// mirror is what a consumer has built from the batches: the last resource
// of every identity.
type mirror struct {
	mu      sync.Mutex
	objs    map[string]syncer.Update
	inSync  bool
	resyncs int
	skipped int
	batches []syncer.Batch
	// inSyncAt is the mirror as it was when InSync first showed.
	inSyncAt map[string]syncer.Update
}

func id(kind, ns, name string) string { return kind + ":" + ns + "/" + name }

func (m *mirror) add(b syncer.Batch) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range b.Updates {
		k := id(u.Kind, u.Namespace, u.Name)
		if u.Deleted() {
			if _, ok := m.objs[k]; !ok {
				panic("delete of something never delivered: " + k)
			}
			delete(m.objs, k)
		} else {
			m.objs[k] = u
		}
	}
	if b.InSync && !m.inSync {
		m.inSyncAt = maps.Clone(m.objs)
	}
	if m.inSync && !b.InSync {
		panic("in sync went back to false")
	}
	m.inSync = m.inSync || b.InSync
	m.resyncs += b.Resyncs
	m.skipped += b.Skipped
	m.batches = append(m.batches, b)
}

// start runs a syncer on be for kinds until the test ends, draining it into
// a mirror.
func start(t *testing.T, be datastore.Backend, kinds ...string) *mirror {
	t.Helper()
	infos, err := syncer.KindsNamed(kinds...)
	if err != nil {
		t.Fatal(err)
	}
	s := syncer.New(be, syncer.Config{Kinds: infos, RestartBackoff: 50 * time.Millisecond})
	m := &mirror{objs: map[string]syncer.Update{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { s.Run(ctx); done <- struct{}{} }()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.Notify():
				m.add(s.Take())
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return m
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// datastoreState is what the mirror must converge to: every resource of the
// kinds, by identity, with its revision.
func datastoreState(t *testing.T, cl *client.Client, kinds ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, kn := range kinds {
		k, _ := v3.KindByKind(kn)
		rs, _, err := cl.List(context.Background(), k, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			out[id(kn, r.GetNamespace(), r.GetName())] = r.GetResourceVersion()
		}
	}
	return out
}

func (m *mirror) state() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for k, u := range m.objs {
		out[k] = u.Resource.GetResourceVersion()
	}
	return out
}

func (m *mirror) synced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inSync
}

func setup(t *testing.T) (*embedded.Server, *datastore.Etcd, *client.Client) {
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	cl := client.New(be)
	if err := cl.EnsureInitialized(context.Background()); err != nil {
		t.Fatal(err)
	}
	return srv, be, cl
}

func TestSnapshotThenInSync(t *testing.T) {
	_, be, cl := setup(t)
	apply(t, cl, profileDoc, gnpDoc, netpol("allow-clients", "role == 'server'"),
		wep("a", "10.65.0.2", "role: client"), wep("b", "10.65.0.3", "role: server"))

	m := start(t, be, policyKinds...)
	eventually(t, "in sync", m.synced)
	want := datastoreState(t, cl, policyKinds...)
	m.mu.Lock()
	got := map[string]string{}
	for k, u := range m.inSyncAt {
		got[k] = u.Resource.GetResourceVersion()
	}
	m.mu.Unlock()
	// Everything was delivered by the batch that said InSync: the built-in
	// tiers, both endpoints, both policies, the profile; no IP pool exists
	// and that kind still reported in sync.
	if !maps.Equal(got, want) {
		t.Fatalf("at in-sync the consumer has\n%v\nthe datastore has\n%v", got, want)
	}
	for _, k := range []string{
		id(v3.KindWorkloadEndpoint, "ns1", "h1-k8s-a-eth0"), id(v3.KindNetworkPolicy, "ns1", "allow-clients"),
		id(v3.KindGlobalNetworkPolicy, "", "deny-db"), id(v3.KindTier, "", "default"), id(v3.KindProfile, "", "kns.ns1"),
	} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing from the snapshot", k)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.resyncs != 0 || m.skipped != 0 {
		t.Errorf("resyncs %d, skipped %d; want 0, 0", m.resyncs, m.skipped)
	}
}

func TestInSyncWaitsForEveryPrefix(t *testing.T) {
	// A backend whose one kind never finishes listing holds in-sync back.
	_, be, cl := setup(t)
	apply(t, cl, profileDoc)
	slow := etcdtest.NewGated(be, client.KindPrefix(mustKind(v3.KindTier), ""))
	m := start(t, slow, v3.KindProfile, v3.KindTier)
	// kns.ns1 and the built-in projectcalico-default-allow.
	eventually(t, "the profiles", func() bool { return len(m.state()) == 2 })
	time.Sleep(200 * time.Millisecond)
	if m.synced() {
		t.Fatal("in sync before the tiers were listed")
	}
	close(slow.Release)
	eventually(t, "in sync", m.synced)
	if got, want := m.state(), datastoreState(t, cl, v3.KindProfile, v3.KindTier); !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func mustKind(name string) *v3.KindInfo {
	k, ok := v3.KindByKind(name)
	if !ok {
		panic(name)
	}
	return k
}

func TestLiveChangesReachTheGraph(t *testing.T) {
	_, be, cl := setup(t)
	apply(t, cl, profileDoc)
	m := start(t, be, policyKinds...)
	eventually(t, "in sync", m.synced)

	apply(t, cl, wep("a", "10.65.0.2", "role: client"), wep("b", "10.65.0.3", "role: server"),
		netpol("allow-clients", "role == 'server'"))
	eventually(t, "creates", func() bool { return maps.Equal(m.state(), datastoreState(t, cl, policyKinds...)) })
	// An update: b is no longer a server, a becomes one.
	apply(t, cl, wep("b", "10.65.0.3", "role: other"), wep("a", "10.65.0.2", "role: server"))
	eventually(t, "updates", func() bool { return maps.Equal(m.state(), datastoreState(t, cl, policyKinds...)) })

	// Feed what the mirror received into a graph: the policy now applies
	// to a, not b.
	g := calc.New(calc.Config{NodeName: "h1"})
	m.mu.Lock()
	for _, b := range m.batches {
		for _, u := range b.Updates {
			g.OnUpdate(calc.Update{Kind: u.Kind, Namespace: u.Namespace, Name: u.Name, Resource: u.Resource})
		}
	}
	m.mu.Unlock()
	g.OnInSync()
	st := g.State()
	a := st.Endpoints[calc.EndpointID{Kind: v3.KindWorkloadEndpoint, Namespace: "ns1", Name: "h1-k8s-a-eth0"}]
	b := st.Endpoints[calc.EndpointID{Kind: v3.KindWorkloadEndpoint, Namespace: "ns1", Name: "h1-k8s-b-eth0"}]
	if a == nil || b == nil {
		t.Fatalf("endpoints missing from the graph: %v", slices.Collect(maps.Keys(st.Endpoints)))
	}
	if len(a.Ingress) != 1 || len(a.Ingress[0].Policies) != 1 || a.Ingress[0].Policies[0].Name != "allow-clients" {
		t.Errorf("a's ingress = %+v, want the policy", a.Ingress)
	}
	if len(b.Ingress) != 0 {
		t.Errorf("b's ingress = %+v, want none", b.Ingress)
	}

	// Deletes carry the identity the creates had.
	del(t, cl, v3.KindNetworkPolicy, "ns1", "allow-clients")
	del(t, cl, v3.KindWorkloadEndpoint, "ns1", "h1-k8s-b-eth0")
	eventually(t, "deletes", func() bool { return maps.Equal(m.state(), datastoreState(t, cl, policyKinds...)) })
	m.mu.Lock()
	var deletes []string
	for _, b := range m.batches {
		for _, u := range b.Updates {
			if u.Resource == nil {
				deletes = append(deletes, id(u.Kind, u.Namespace, u.Name))
			}
		}
	}
	m.mu.Unlock()
	slices.Sort(deletes)
	want := []string{id(v3.KindNetworkPolicy, "ns1", "allow-clients"), id(v3.KindWorkloadEndpoint, "ns1", "h1-k8s-b-eth0")}
	if !slices.Equal(deletes, want) {
		t.Errorf("deletes %v, want %v", deletes, want)
	}
}

func TestCompactionWhileDisconnectedConverges(t *testing.T) {
	srv, direct, cl := setup(t)
	apply(t, cl, profileDoc, wep("a", "10.65.0.2", "role: client"), wep("b", "10.65.0.3", "role: server"),
		netpol("p1", "all()"), netpol("p2", "all()"))
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	viaProxy, err := datastore.New(datastore.Config{Endpoints: []string{proxy.Endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { viaProxy.Close() })
	m := start(t, viaProxy, policyKinds...)
	eventually(t, "in sync", m.synced)

	proxy.Cut()
	// While the syncer cannot see it: a create, an update, deletes; then
	// the history it would resume from is compacted away.
	apply(t, cl, wep("c", "10.65.0.4", "role: new"), wep("a", "10.65.0.2", "role: changed"),
		netpol("p3", "role == 'new'"))
	del(t, cl, v3.KindNetworkPolicy, "ns1", "p1")
	del(t, cl, v3.KindWorkloadEndpoint, "ns1", "h1-k8s-b-eth0")
	_, rev, err := direct.List(context.Background(), client.ResourcePrefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Client().Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()

	want := datastoreState(t, cl, policyKinds...)
	eventually(t, "convergence after compaction", func() bool { return maps.Equal(m.state(), want) })
	eventually(t, "resyncs counted", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.resyncs > 0 })
	if _, ok := m.state()[id(v3.KindNetworkPolicy, "ns1", "p1")]; ok {
		t.Error("deleted policy p1 survived the resync")
	}
}

func TestUndecodableValueSkipped(t *testing.T) {
	_, be, cl := setup(t)
	k := mustKind(v3.KindNetworkPolicy)
	bad := client.Key(k, "ns1", "garbage")
	if _, err := be.Create(context.Background(), bad, []byte(`{"spec": {"ingress": "not a list"`)); err != nil {
		t.Fatal(err)
	}
	apply(t, cl, netpol("good", "all()"))
	m := start(t, be, v3.KindNetworkPolicy)
	eventually(t, "in sync", m.synced)
	if got := m.state(); len(got) != 1 {
		t.Fatalf("got %v, want only the good policy", got)
	}
	m.mu.Lock()
	if m.skipped != 1 {
		t.Errorf("skipped %d, want 1", m.skipped)
	}
	m.mu.Unlock()

	// A good value turned bad is as good as deleted; fixed, it is back.
	goodKey := client.Key(k, "ns1", "good")
	if _, err := be.Update(context.Background(), goodKey, []byte("not json"), 0); err == nil {
		t.Fatal("update at revision 0 should fail")
	}
	kv, err := be.Get(context.Background(), goodKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := be.Update(context.Background(), goodKey, []byte("not json"), kv.Revision); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the corrupted policy to go", func() bool { return len(m.state()) == 0 })
	if _, err := be.Delete(context.Background(), goodKey, 0); err != nil {
		t.Fatal(err)
	}
	apply(t, cl, netpol("good", "all()"), netpol("other", "all()"))
	eventually(t, "both policies", func() bool { return len(m.state()) == 2 })
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.skipped != 2 {
		t.Errorf("skipped %d, want 2", m.skipped)
	}
}

// failingBackend ends the first watch of every prefix with EventError once
// the test says so, as a watch does when retrying cannot help.
type failingBackend struct {
	*datastore.Etcd
	fail chan struct{}
	once sync.Map
}

func (f *failingBackend) Watch(ctx context.Context, prefix string, fromRev int64) <-chan datastore.WatchEvent {
	if _, again := f.once.LoadOrStore(prefix, true); again {
		return f.Etcd.Watch(ctx, prefix, fromRev)
	}
	wctx, cancel := context.WithCancel(ctx)
	in := f.Etcd.Watch(wctx, prefix, fromRev)
	out := make(chan datastore.WatchEvent)
	go func() {
		defer close(out)
		defer cancel()
		for {
			select {
			case ev, ok := <-in:
				if !ok {
					return
				}
				out <- ev
			case <-f.fail:
				out <- datastore.WatchEvent{Type: datastore.EventError, Err: fmt.Errorf("injected failure")}
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func TestRestartedWatchDeletesWhatVanished(t *testing.T) {
	_, be, cl := setup(t)
	apply(t, cl, netpol("stays", "all()"), netpol("goes", "all()"))
	fb := &failingBackend{Etcd: be, fail: make(chan struct{})}
	m := start(t, fb, v3.KindNetworkPolicy)
	eventually(t, "in sync", m.synced)
	if len(m.state()) != 2 {
		t.Fatalf("got %v", m.state())
	}
	close(fb.fail)
	// The watch is dead; what changes now is seen only by the new list.
	del(t, cl, v3.KindNetworkPolicy, "ns1", "goes")
	apply(t, cl, netpol("new", "all()"))
	want := datastoreState(t, cl, v3.KindNetworkPolicy)
	eventually(t, "convergence after the watch restarted", func() bool { return maps.Equal(m.state(), want) })
	eventually(t, "the restart counted as a resync", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.resyncs == 1 })
}

func TestKindsNamed(t *testing.T) {
	ks, err := syncer.KindsNamed(v3.KindTier, v3.KindIPPool, v3.KindTier)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range ks {
		names = append(names, k.Kind)
	}
	if got := strings.Join(names, ","); got != "IPPool,Tier" {
		t.Errorf("got %s", got)
	}
	if _, err := syncer.KindsNamed("Nope"); err == nil {
		t.Error("unknown kind accepted")
	}
}

// TestOneTransactionOneBatch: the changes of one datastore transaction
// reach the consumer in one batch, so the agent programs them together
// rather than in pieces.
func TestOneTransactionOneBatch(t *testing.T) {
	_, be, cl := setup(t)
	m := start(t, be, policyKinds...)
	eventually(t, "in sync", m.synced)
	var rs []v3.Resource
	for i := range 300 {
		r, err := v3.Decode([]byte(netpol(fmt.Sprintf("p%03d", i), "role == 'server'")))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	// The snapshot's batches (the set-up's tiers, the built-in profile)
	// may share the Take that first says InSync; only what follows counts.
	m.mu.Lock()
	before := len(m.batches)
	m.mu.Unlock()
	if _, err := cl.Batch(context.Background(), client.OpApply, rs); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the policies", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.objs) >= len(rs)
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range m.batches[before:] {
		if n := len(b.Updates); n > 0 && n != len(rs) {
			var what []string
			for _, u := range b.Updates {
				what = append(what, u.Kind+"/"+u.Name+"@"+u.Resource.GetResourceVersion())
			}
			t.Errorf("a batch of %d updates: one transaction of %d arrived in pieces: %v", n, len(rs), what)
		}
	}
}

// TestRawKind: a prefix outside the v3 API (IPAM blocks) is listed and
// watched like a kind; values arrive undecoded, named by their key, and a
// delete says so.
func TestRawKind(t *testing.T) {
	be := etcdtest.NewClient(t, etcdtest.Start(t))
	ctx := context.Background()
	key := syncer.IPAMBlockPrefix + "ipv4/block/10.65.0.0-26"
	if _, err := be.Create(ctx, key, []byte(`{"cidr":"10.65.0.0/26"}`)); err != nil {
		t.Fatal(err)
	}
	m := start(t, be, syncer.KindIPAMBlock, v3.KindIPPool)
	eventually(t, "in sync with the block", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.inSync && len(m.objs) == 1
	})
	m.mu.Lock()
	u := m.objs[id(syncer.KindIPAMBlock, "", "ipv4/block/10.65.0.0-26")]
	m.mu.Unlock()
	if u.Resource != nil || string(u.Value) != `{"cidr":"10.65.0.0/26"}` || u.Key != key {
		t.Errorf("got %+v, want the raw value under its key", u)
	}
	if _, err := be.Delete(ctx, key, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the delete", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return len(m.objs) == 0 })
}

// TestBuiltinProfile: the Profile kind's first snapshot carries Calico's
// built-in projectcalico-default-allow (it is never stored), and a stored
// value under that name is ignored.
func TestBuiltinProfile(t *testing.T) {
	be := etcdtest.NewClient(t, etcdtest.Start(t))
	key := client.Key(mustKind(v3.KindProfile), "", client.DefaultAllowProfileName)
	if _, err := be.Create(context.Background(), key, []byte(`{"kind":"Profile","apiVersion":"projectcalico.org/v3","metadata":{"name":"projectcalico-default-allow"},"spec":{"ingress":[{"action":"Deny"}]}}`)); err != nil {
		t.Fatal(err)
	}
	m := start(t, be, v3.KindProfile)
	eventually(t, "in sync", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.inSync })
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.inSyncAt[id(v3.KindProfile, "", client.DefaultAllowProfileName)]
	if !ok {
		t.Fatalf("no built-in profile in the first snapshot: %v", m.inSyncAt)
	}
	p := u.Resource.(*v3.Profile)
	if len(p.Spec.Ingress) != 1 || p.Spec.Ingress[0].Action != v3.Allow || len(p.Spec.Egress) != 1 || p.Spec.Egress[0].Action != v3.Allow {
		t.Errorf("built-in profile %+v: want allow all both ways", p.Spec)
	}
	if m.skipped != 1 {
		t.Errorf("skipped %d, want the stored value under the built-in name ignored", m.skipped)
	}
}

// A consumer that falls behind holds the watches back: no more than
// MaxPending updates wait for it and none is lost; and a syncer whose
// consumer has stopped taking still ends with its context.
func TestPendingIsBounded(t *testing.T) {
	_, be, cl := setup(t)
	for i := range 60 {
		apply(t, cl, wep(fmt.Sprintf("p%d", i), fmt.Sprintf("10.65.0.%d", 10+i), "role: client"))
	}
	infos, err := syncer.KindsNamed(v3.KindWorkloadEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	const bound = 10
	s := syncer.New(be, syncer.Config{Kinds: infos, MaxPending: bound})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()

	// Nothing taken for a while: what waits is at the bound, not the 60.
	time.Sleep(300 * time.Millisecond)
	got := map[string]bool{}
	for deadline := time.Now().Add(20 * time.Second); ; {
		b := s.Take()
		if len(b.Updates) > bound {
			t.Fatalf("%d updates waited for Take, bound %d", len(b.Updates), bound)
		}
		for _, u := range b.Updates {
			got[u.Name] = true
		}
		if b.InSync {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not in sync; %d endpoints delivered", len(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(got) != 60 {
		t.Fatalf("%d endpoints delivered, want 60", len(got))
	}

	// Live changes past the bound, nobody taking: cancelling still ends Run.
	for i := range bound + 5 {
		apply(t, cl, wep(fmt.Sprintf("q%d", i), fmt.Sprintf("10.65.1.%d", 10+i), "role: client"))
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end with its context while its queue was full")
	}
}
