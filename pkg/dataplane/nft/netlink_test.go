package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/calc"
)

// newNSNetlink opens a Netlink in n and counts what goes which way.
func newNSNetlink(tb testing.TB, n ns.NetNS) (*Netlink, *nlCount) {
	tb.Helper()
	nl, err := NewNetlink(nftables.WithNetNSFd(int(n.Fd())))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = nl.Close() })
	c := &nlCount{}
	nl.SetObserver(func(d time.Duration, err error) {
		c.runs++
		c.took += d
		if err != nil {
			tb.Errorf("netlink transaction: %v", err)
		}
	}, func(err error) {
		c.fallbacks++
		c.last = err
	})
	return nl, c
}

type nlCount struct {
	runs, fallbacks int
	took            time.Duration // of the runs
	last            error
}

// TestKernelNetlinkEqualsNft drives two drivers through the same changes,
// one writing everything with nft, one writing incremental changes over
// netlink, each in its own network namespace: after every step the two
// kernels must list the same table. And the steps that only add rules,
// chains and elements must have gone over netlink.
func TestKernelNetlinkEqualsNft(t *testing.T) {
	viaNft, viaNL, count, differ := nftAndNetlink(t)

	final := featureScenario()
	steps := changesOf(final.state)
	web := func(a calc.Action, port uint16, src ...netip.Prefix) *calc.Policy {
		return gpol("web", "default", []calc.Rule{
			rule("default web I0", a, func(r *calc.Rule) {
				r.Protocol = calc.ProtoTCP
				r.Dst.Ports = ports(port, port)
				r.Src.Nets = src
			}),
			rule("default web I1", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.NamedPortSets = []string{"n:http"} }),
		}, nil)
	}
	twin := wl("web2", "caliweb2", "10.0.0.4/32")
	for _, e := range steps.EndpointUpdates {
		if e.ID.Name == "web" {
			twin.Ingress, twin.Profiles = e.Ingress, e.Profiles
		}
	}
	type step struct {
		name    string
		c       calc.Changes
		netlink bool // must go over netlink
	}
	for _, s := range []step{
		{name: "empty table", c: calc.Changes{}},
		{name: "IP sets", c: calc.Changes{IPSetUpdates: steps.IPSetUpdates}, netlink: true},
		{name: "policies and profiles", c: calc.Changes{PolicyUpdates: steps.PolicyUpdates, ProfileUpdates: steps.ProfileUpdates}},
		{name: "endpoints", c: calc.Changes{EndpointUpdates: steps.EndpointUpdates}, netlink: true},
		{name: "a rule's port", c: calc.Changes{PolicyUpdates: []*calc.Policy{web(calc.Allow, 81)}}, netlink: true},
		{name: "a rule's action", c: calc.Changes{PolicyUpdates: []*calc.Policy{web(calc.Deny, 81)}}, netlink: true},
		{name: "a rule's sources", c: calc.Changes{PolicyUpdates: []*calc.Policy{
			web(calc.Allow, 81, pfx("10.1.0.0/16"), pfx("10.2.3.4/32"), pfx("fd00:1::/64"))}}, netlink: true},
		{name: "port ranges", c: calc.Changes{PolicyUpdates: []*calc.Policy{web(calc.Allow, 8000)}}, netlink: true},
		{name: "members added", c: calc.Changes{MemberDeltas: []calc.MemberDelta{
			{SetID: "s:front", Added: []calc.Member{member("10.9.0.0/16"), member("fd00::9/128"), member("10.0.2.7/32")}},
			{SetID: "n:http", Added: []calc.Member{npMember("10.0.0.9/32", 8080), npMember("fd00::9/128", 9090)}}}}, netlink: true},
		{name: "members removed", c: calc.Changes{MemberDeltas: []calc.MemberDelta{
			{SetID: "s:front", Removed: []calc.Member{member("10.0.1.1/32"), member("10.9.0.0/16")}},
			{SetID: "n:http", Removed: []calc.Member{npMember("10.0.0.9/32", 8080)}}}}, netlink: true},
		{name: "an endpoint with the same policies", c: calc.Changes{EndpointUpdates: []*calc.Endpoint{twin}}, netlink: true},
		{name: "that endpoint gone", c: calc.Changes{EndpointRemoves: []calc.EndpointID{twin.ID}}, netlink: true},
		{name: "nothing changed", c: calc.Changes{}},
		{name: "an endpoint with its own program removed", c: calc.Changes{EndpointRemoves: []calc.EndpointID{wl("db", "calidb").ID}}},
		{name: "cleanup", c: calc.Changes{}},
	} {
		before := count.runs
		for _, d := range []*Driver{viaNft, viaNL} {
			c := s.c
			c.InSync = true
			if err := d.Apply(t.Context(), &c); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		if d := differ(); d != "" {
			t.Fatalf("%s: %s", s.name, d)
		}
		if s.netlink && count.runs == before {
			t.Errorf("%s: not written over netlink (last fallback: %v)", s.name, count.last)
		}
	}
	t.Logf("%d transactions over netlink, %d through nft for want of a netlink form (last: %v)", count.runs, count.fallbacks, count.last)
}

// TestKernelBigCreateOverNetlink: 10,000 rules on an endpoint, written to
// a table that exists (the agent's "apply 100 policies" after its start),
// go over netlink whole, sets, chains, rules and elements in messages the
// kernel takes, and the table equals one nft wrote.
func TestKernelBigCreateOverNetlink(t *testing.T) {
	viaNft, viaNL, count, differ := nftAndNetlink(t)
	s, _ := bigScenario()
	for _, c := range []*calc.Changes{{InSync: true}, changesOf(s.state)} {
		for _, d := range []*Driver{viaNft, viaNL} {
			if err := d.Apply(t.Context(), c); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The first is the empty cold start's (the table's base chains
	// through nft first).
	if count.runs != 2 || count.fallbacks != 0 {
		t.Errorf("%d transactions over netlink, %d through nft (last: %v); want the cold start and the whole creation over netlink", count.runs, count.fallbacks, count.last)
	}
	if d := differ(); d != "" {
		t.Error(d)
	}
	t.Logf("created over netlink in %v", count.took)
}

// TestKernelColdStartOverNetlink: a driver's first sync into an empty
// namespace goes over netlink but for the table and its base chains, which
// nft writes first, and a new driver's first sync over a table already
// there (an agent restarted) goes over netlink whole. Both times the
// kernel's table equals what nft alone writes.
func TestKernelColdStartOverNetlink(t *testing.T) {
	s, _ := bigScenario()
	viaNft, viaNL, count, differ := coldStartBoth(t, changesOf(s.state))

	// Restarts: new drivers, the same namespaces (and socket), one policy
	// changed meanwhile.
	nl := viaNL.nl
	viaNft, viaNL = New(viaNft.nft, Config{}), New(viaNL.nft, Config{})
	viaNL.SetNetlink(nl)
	s.pol(gpol("allow-client", "default", []calc.Rule{allowClient(calc.Deny)}, nil))
	for _, d := range []*Driver{viaNft, viaNL} {
		if err := d.Apply(t.Context(), changesOf(s.state)); err != nil {
			t.Fatal(err)
		}
	}
	if count.runs != 2 || count.fallbacks != 0 {
		t.Errorf("restart: %d transactions over netlink in all, %d through nft (last: %v); want the restart's over netlink", count.runs, count.fallbacks, count.last)
	}
	if d := differ(); d != "" {
		t.Fatal(d)
	}

	// The table deleted under both drivers: their resyncs write it again,
	// the netlink one's base chains through nft first.
	for _, d := range []*Driver{viaNft, viaNL} {
		tx := d.nft.NewTransaction()
		tx.Delete(&knftables.Table{})
		if err := d.nft.Run(t.Context(), tx); err != nil {
			t.Fatal(err)
		}
		if err := d.Resync(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if count.runs != 3 || count.fallbacks != 0 {
		t.Errorf("table deleted: %d transactions over netlink in all, %d through nft (last: %v); want the resync's over netlink", count.runs, count.fallbacks, count.last)
	}
	if d := differ(); d != "" {
		t.Error(d)
	}
}

// TestKernelColdStart100kOverNetlink: bench/policy's 100,000 elements,
// as a first sync over netlink (the new sets ahead of the rules, in
// transactions of their own), make the table nft alone writes.
func TestKernelColdStart100kOverNetlink(t *testing.T) {
	coldStartBoth(t, changesOf(coldScenario().state))
}

// coldStartBoth is nftAndNetlink's two drivers after a first sync of c
// each, which must have gone over netlink in one transaction (but for
// the table and its base chains) and listed the same table.
func coldStartBoth(t *testing.T, c *calc.Changes) (viaNft, viaNL *Driver, count *nlCount, differ func() string) {
	t.Helper()
	viaNft, viaNL, count, differ = nftAndNetlink(t)
	for _, d := range []*Driver{viaNft, viaNL} {
		if err := d.Apply(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	if count.runs != 1 || count.fallbacks != 0 {
		t.Errorf("cold start: %d transactions over netlink, %d through nft (last: %v); want one over netlink", count.runs, count.fallbacks, count.last)
	}
	if d := differ(); d != "" {
		t.Fatal(d)
	}
	return viaNft, viaNL, count, differ
}

// TestKernelNetlinkMaxMessages: a transaction of maxDirectMessages
// messages goes over netlink, every acknowledgement read (receiveBuffer
// holds them all), and one message more goes to nft.
func TestKernelNetlinkMaxMessages(t *testing.T) {
	testenv.RequireRoot(t)
	n, name := testenv.NewNS(t)
	testenv.Sh(t, "ip", "netns", "exec", name, "nft", "add", "table", "inet", "tortie")
	nl, _ := newNSNetlink(t, n)
	chains := func(from, count int) []op {
		ops := make([]op, count)
		for i := range ops {
			ops[i] = op{kind: opAddChain, name: fmt.Sprintf("c%d", from+i), chain: &chainT{}}
		}
		return ops
	}
	if err := nl.run(t.Context(), "tortie", chains(0, maxDirectMessages), nil); err != nil {
		t.Fatalf("%d messages: %v", maxDirectMessages, err)
	}
	out := testenv.Sh(t, "ip", "netns", "exec", name, "nft", "list", "chains", "inet")
	if got := strings.Count(out, "chain c"); got != maxDirectMessages {
		t.Errorf("%d chains in the kernel; want %d", got, maxDirectMessages)
	}
	if err := nl.run(t.Context(), "tortie", chains(maxDirectMessages, maxDirectMessages+1), nil); !errors.Is(err, errNotEncodable) {
		t.Errorf("%d messages: %v; want errNotEncodable", maxDirectMessages+1, err)
	}
}

// nftAndNetlink are two drivers in network namespaces of their own (root
// only), one writing everything with nft, one writing incremental syncs
// over netlink (count counts those), and differ, which says how the two
// kernels' tables differ ("" when they list the same).
func nftAndNetlink(t *testing.T) (viaNft, viaNL *Driver, count *nlCount, differ func() string) {
	testenv.RequireRoot(t)
	n1, name1 := testenv.NewNS(t)
	n2, name2 := testenv.NewNS(t)
	viaNft = New(newNSNFT(t, n1), Config{})
	viaNL = New(newNSNFT(t, n2), Config{})
	nl, count := newNSNetlink(t, n2)
	viaNL.SetNetlink(nl)
	list := func(name string) string {
		return sortBlocks(sortElements(testenv.Sh(t, "ip", "netns", "exec", name, "nft", "list", "table", "inet", "tortie")))
	}
	return viaNft, viaNL, count, func() string {
		if got, want := list(name2), list(name1); got != want {
			return fmt.Sprintf("the table written over netlink differs from nft's:\n--- netlink\n%s\n--- nft\n%s", got, want)
		}
		return ""
	}
}

// sortElements sorts the elements of every set and map in an `nft list`
// output: the kernel lists a hash set in its own order.
// sortBlocks puts a table listing's sets and chains after the first in
// order: nft lists each kind in the order they were created, and a cold
// start over netlink creates the base chains first (nft, alone, in name
// order with the rest).
func sortBlocks(listing string) string {
	body, ok := strings.CutSuffix(strings.TrimRight(listing, "\n"), "\n}")
	if !ok {
		return listing
	}
	blocks := strings.Split(body, "\n\n")
	slices.Sort(blocks[1:])
	return strings.Join(blocks, "\n\n") + "\n}"
}

func sortElements(listing string) string {
	var out []string
	lines := strings.Split(listing, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		head, rest, ok := strings.Cut(l, "elements = { ")
		if !ok {
			out = append(out, l)
			continue
		}
		body := rest
		for !strings.HasSuffix(strings.TrimSpace(body), "}") && i+1 < len(lines) {
			i++
			body += " " + strings.TrimSpace(lines[i])
		}
		body = strings.TrimSuffix(strings.TrimSpace(body), "}")
		var els []string
		for _, e := range strings.Split(body, ",") {
			if e = strings.TrimSpace(e); e != "" {
				els = append(els, e)
			}
		}
		slices.Sort(els)
		out = append(out, head+"elements = { "+strings.Join(els, ", ")+" }")
	}
	return strings.Join(out, "\n")
}

// TestSplitNewSets: the sets a transaction creates go ahead, whole, in
// batches of about preBatch messages, when their elements take that many;
// maps, existing sets' elements and everything else stay, in order.
func TestSplitNewSets(t *testing.T) {
	set := func(name string, isMap bool) nlStep {
		return nlStep{kind: opAddSet, name: name, set: &nftables.Set{Name: name, IsMap: isMap}}
	}
	elems := func(name string, n int) nlStep { return nlStep{kind: opAddElem, name: name, count: n} }
	chain := nlStep{kind: opAddChain, name: "c"}
	rule := nlStep{kind: opAddRule, name: "c"}
	names := func(batch []nlStep) string {
		var out []string
		for _, s := range batch {
			out = append(out, fmt.Sprintf("%d:%s", s.kind, s.name))
		}
		return strings.Join(out, " ")
	}
	big := 40 * elemsPerMessage // 40 messages
	for _, c := range []struct {
		name  string
		steps []nlStep
		pre   []string
		rest  string
	}{
		{"small: one transaction", []nlStep{set("a", false), chain, elems("a", 10), rule},
			nil, names([]nlStep{set("a", false), chain, elems("a", 10), rule})},
		{"big new sets ahead, two to a batch", []nlStep{set("a", false), set("b", false), set("m", true), set("c", false), chain,
			elems("a", big), elems("b", big), elems("old", big), elems("m", big), elems("c", 1), rule},
			[]string{names([]nlStep{set("a", false), elems("a", big), set("b", false), elems("b", big)}), names([]nlStep{set("c", false), elems("c", 1)})},
			names([]nlStep{set("m", true), chain, elems("old", big), elems("m", big), rule})},
	} {
		t.Run(c.name, func(t *testing.T) {
			pre, rest := splitNewSets(c.steps)
			var got []string
			for _, b := range pre {
				got = append(got, names(b))
			}
			if !slices.Equal(got, c.pre) || names(rest) != c.rest {
				t.Errorf("ahead %q, then %q; want %q, then %q", got, names(rest), c.pre, c.rest)
			}
		})
	}
}
