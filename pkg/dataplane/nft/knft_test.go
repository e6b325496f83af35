package nft

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/calc"
)

// TestKnftMergesElements: with merge, runs of one set's element additions
// (or deletions) are written as statements of up to elemsPerStatement
// elements; maps' elements, and everything without merge, one by one.
func TestKnftMergesElements(t *testing.T) {
	addrs := &setT{setShape: setShape{typ: "ipv4_addr", interval: true}}
	pairs := &setT{setShape: setShape{typ: "ipv4_addr . inet_service"}}
	vmap := &setT{setShape: classMapShape}
	el := func(kind opKind, set *setT, name string, key ...string) op {
		o := op{kind: kind, name: name, set: set, elem: elemT{key: key}}
		if set.isMap {
			o.elem.value = []string{"goto c"}
		}
		return o
	}
	var many []op
	var manyKeys []string
	for i := range elemsPerStatement + 2 {
		a := fmt.Sprintf("10.1.%d.%d", i/256, i%256)
		many = append(many, el(opAddElem, addrs, "a", a))
		manyKeys = append(manyKeys, a)
	}
	for _, tc := range []struct {
		name  string
		ops   []op
		merge bool
		want  []string
	}{{
		name: "runs of one set, broken by another set, a map and a kind",
		ops: []op{
			el(opAddElem, addrs, "a", "10.0.0.1"), el(opAddElem, addrs, "a", "10.0.0.0/24"),
			el(opAddElem, pairs, "p", "10.0.0.1", "80"), el(opAddElem, pairs, "p", "10.0.0.2", "443"),
			el(opAddElem, vmap, "m", "80", "tcp"), el(opAddElem, vmap, "m", "81", "tcp"),
			el(opDelElem, addrs, "a", "10.0.0.9"), el(opDelElem, addrs, "a", "10.0.0.8"),
			el(opAddElem, addrs, "a", "10.0.0.7"),
		},
		merge: true,
		want: []string{
			"add element inet tortie a { 10.0.0.1, 10.0.0.0/24 }",
			"add element inet tortie p { 10.0.0.1 . 80, 10.0.0.2 . 443 }",
			"add element inet tortie m { 80 . tcp : goto c }",
			"add element inet tortie m { 81 . tcp : goto c }",
			"delete element inet tortie a { 10.0.0.9, 10.0.0.8 }",
			"add element inet tortie a { 10.0.0.7 }",
		},
	}, {
		name:  "a run longer than a statement",
		ops:   many,
		merge: true,
		want: []string{
			"add element inet tortie a { " + strings.Join(manyKeys[:elemsPerStatement], ", ") + " }",
			"add element inet tortie a { " + strings.Join(manyKeys[elemsPerStatement:], ", ") + " }",
		},
	}, {
		name: "no merge",
		ops:  []op{el(opAddElem, addrs, "a", "10.0.0.1"), el(opAddElem, addrs, "a", "10.0.0.2")},
		want: []string{"add element inet tortie a { 10.0.0.1 }", "add element inet tortie a { 10.0.0.2 }"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tx := (&txn{ops: tc.ops}).knft(knftables.NewFake(knftables.InetFamily, "tortie").NewTransaction(), tc.merge)
			if got, want := strings.TrimSpace(tx.String()), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestListsElementsLooksThroughWrappers(t *testing.T) {
	fake := knftables.NewFake(knftables.InetFamily, "tortie")
	nft := &nsNFT{} // nft in a namespace: not a fake, not a wrapper
	for _, tc := range []struct {
		name string
		nft  knftables.Interface
		want bool
	}{
		{"fake", fake, false},
		{"recorder of a fake", &recorder{Interface: fake}, false},
		{"recorder of a recorder of a fake", &recorder{Interface: &recorder{Interface: fake}}, false},
		{"nft", nft, true},
		{"recorder of nft", &recorder{Interface: nft}, true},
	} {
		if got := listsElements(tc.nft); got != tc.want {
			t.Errorf("%s: listsElements = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestKernelSetInStatements: a set of 2,500 members written whole (the
// first sync) and then changed by 1,200 removals and 300 additions (an
// incremental sync through nft) holds exactly its members in the kernel,
// and the table equals a second driver's first sync of the final state.
func TestKernelSetInStatements(t *testing.T) {
	testenv.RequireRoot(t)
	addr := func(i int) string { return fmt.Sprintf("10.70.%d.%d", i/250, 1+i%250) }
	state := func(members []int) *calc.State {
		s := newScenario()
		var ms []calc.Member
		for _, i := range members {
			ms = append(ms, member(addr(i)+"/32"))
		}
		s.set("s:many", calc.AddressSet, ms...)
		from := gpol("from-many", "default", []calc.Rule{rule("default from-many I0", calc.Allow, func(r *calc.Rule) { r.Src.IPSet = "s:many" })}, nil)
		s.pol(from)
		ep := wl("b", "calib", "10.65.0.2/32")
		ep.Ingress = []calc.TierPolicies{tierOf("default", calc.Deny, from)}
		s.ep(ep)
		return s.state
	}
	var first, final []int
	var added, removed []calc.Member
	for i := range 2500 {
		first = append(first, i)
		if i%25 < 12 { // 1,200 of them go
			removed = append(removed, member(addr(i)+"/32"))
		} else {
			final = append(final, i)
		}
	}
	for i := 2500; i < 2800; i++ {
		final = append(final, i)
		added = append(added, member(addr(i)+"/32"))
	}

	addrRE := regexp.MustCompile(`10\.70\.\d+\.\d+`)
	check := func(name string, want []int) string {
		t.Helper()
		listing := testenv.Sh(t, "ip", "netns", "exec", name, "nft", "list", "table", "inet", "tortie")
		got := map[string]bool{}
		for _, a := range addrRE.FindAllString(listing, -1) {
			got[a] = true
		}
		for _, i := range want {
			if !got[addr(i)] {
				t.Errorf("%s missing from the kernel's set", addr(i))
			}
			delete(got, addr(i))
		}
		for a := range got {
			t.Errorf("%s in the kernel's set, not a member", a)
		}
		return sortElements(listing)
	}

	n, name := testenv.NewNS(t)
	d := New(newNSNFT(t, n), Config{})
	if !d.mergeElems {
		t.Fatal("the driver does not merge elements for nft (test is broken)")
	}
	if err := d.Apply(t.Context(), changesOf(state(first))); err != nil {
		t.Fatal(err)
	}
	check(name, first)
	change := &calc.Changes{InSync: true, MemberDeltas: []calc.MemberDelta{{SetID: "s:many", Added: added, Removed: removed}}}
	if err := d.Apply(t.Context(), change); err != nil {
		t.Fatal(err)
	}
	got := check(name, final)

	n2, name2 := testenv.NewNS(t)
	if err := New(newNSNFT(t, n2), Config{}).Apply(t.Context(), changesOf(state(final))); err != nil {
		t.Fatal(err)
	}
	if want := check(name2, final); got != want {
		t.Errorf("table after the change differs from a first sync of the final state:\n%s\nwant:\n%s", got, want)
	}
}
