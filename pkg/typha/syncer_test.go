package typha_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/syncer"
	"github.com/tortie/tortie/pkg/typha"
)

// consumer drains a syncer the way the agent does and keeps what it was
// told.
type consumer struct {
	s       *syncer.Syncer
	state   map[string]string
	inSync  bool
	trouble string
	log     []string
}

func (c *consumer) take() {
	b := c.s.Take()
	for _, u := range b.Updates {
		if u.Deleted() {
			delete(c.state, u.Name)
			c.log = append(c.log, "delete "+u.Name)
		} else {
			c.state[u.Name] = string(u.Value)
			c.log = append(c.log, "put "+u.Name+"="+string(u.Value))
		}
	}
	c.inSync = c.inSync || b.InSync
	c.trouble = b.Trouble
}

func (c *consumer) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		c.take()
		if cond() {
			return
		}
		select {
		case <-c.s.Notify():
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s: state %v, in sync %v, trouble %q, log %v", what, c.state, c.inSync, c.trouble, c.log)
		}
	}
}

// TestSyncerOverTypha: an agent's syncer fed by typhas converges to the
// datastore across the loss of its typha (it moves to another, and is told
// exactly what changed meanwhile, deletions included) and says why it is
// not streaming while no typha is reachable.
func TestSyncerOverTypha(t *testing.T) {
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	kinds, err := syncer.KindsNamed(syncer.KindIPAMBlock)
	if err != nil {
		t.Fatal(err)
	}
	prefix := kinds[0].Prefix
	for _, k := range []string{"a", "b"} {
		if _, err := be.Create(context.Background(), prefix+k, []byte("v1")); err != nil {
			t.Fatal(err)
		}
	}
	serve := func(addr string) (*typha.Server, func()) {
		s, err := typha.NewServer(typha.ServerConfig{Backend: be, Prefixes: []string{prefix}, Name: addr, PingInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{}, 2)
		go func() { s.Run(ctx); done <- struct{}{} }()
		go func() { _ = s.Serve(ctx, ln); done <- struct{}{} }()
		stop := func() { cancel(); <-done; <-done }
		t.Cleanup(func() {
			if ctx.Err() == nil {
				stop()
			}
		})
		return s, stop
	}
	addrs := []string{freeAddr(t), freeAddr(t)}
	typhas := map[string]*typha.Server{}
	stops := map[string]func(){}
	for _, a := range addrs {
		typhas[a], stops[a] = serve(a)
	}
	cl, err := typha.NewClient(typha.ClientConfig{Addrs: addrs, Node: "n1", DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := syncer.New(nil, syncer.Config{Kinds: kinds, Feed: cl, RestartBackoff: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	c := &consumer{s: s, state: map[string]string{}}
	c.waitFor(t, "the first snapshot", func() bool { return c.inSync && len(c.state) == 2 })

	// Which typha serves the agent: that one goes away, with changes
	// made meanwhile.
	var serving string
	for _, a := range addrs {
		if typhas[a].Connections() == 1 {
			serving = a
		}
	}
	if serving == "" {
		t.Fatal("no typha has the agent")
	}
	stops[serving]()
	if _, err := be.Delete(ctx, prefix+"a", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Create(ctx, prefix+"c", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	c.log = nil
	c.waitFor(t, "the changes through the other typha", func() bool {
		return fmt.Sprint(c.state) == "map[b:v1 c:v1]" && c.trouble == ""
	})
	if got := strings.Join(slices.Sorted(slices.Values(c.log)), ","); got != "delete a,put c=v1" {
		t.Errorf("after moving typha the consumer was told %q, want only the difference", got)
	}
	other := addrs[0]
	if other == serving {
		other = addrs[1]
	}
	if typhas[other].Connections() != 1 {
		t.Errorf("the other typha has %d agents, want 1", typhas[other].Connections())
	}

	// No typha at all: the trouble names it, and it clears once one is back.
	stops[other]()
	c.waitFor(t, "the trouble reported", func() bool { return strings.Contains(c.trouble, "no typha reachable") })
	put(t, be, prefix+"b", "v2")
	c.log = nil
	typhas[other], stops[other] = serve(other)
	c.waitFor(t, "recovery", func() bool { return c.trouble == "" && c.state["b"] == "v2" })
	if got := slices.Sorted(maps.Keys(c.state)); fmt.Sprint(got) != "[b c]" {
		t.Errorf("state %v after recovery", got)
	}
	if got := strings.Join(c.log, ","); got != "put b=v2" {
		t.Errorf("after recovery the consumer was told %q, want only the difference", got)
	}
}

// freeAddr is a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := etcdtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

var _ datastore.Backend = (*datastore.Etcd)(nil)
