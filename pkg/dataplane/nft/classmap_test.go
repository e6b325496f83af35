package nft

import (
	"slices"
	"strings"
	"testing"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/calc"
)

// onPort80 is bench/policy's stress variant of the first 100 policies of
// bigScenario, one rule in ten (1,000 in all) moving onto port 80, but
// onto ports 80–81: 81 is in a class of the last partition that the moved
// rules cover only part of, so each is a partial member there, too many
// for the partition to be kept (sticky.go), and the program is
// partitioned afresh, which is what these tests are about.
func onPort80(pols []*calc.Policy) []*calc.Policy {
	var out []*calc.Policy
	for _, p := range pols[:100] {
		q := *p
		q.Ingress = append([]calc.Rule(nil), p.Ingress...)
		for j := 9; j < len(q.Ingress); j += 10 {
			q.Ingress[j].Dst.Ports = ports(80, 81)
		}
		out = append(out, &q)
	}
	return out
}

// classMapOps sorts the operations of tx on class maps: element deletions,
// element additions, map creations and deletions.
func classMapOps(tx string) (delElems, addElems int, addMaps, delMaps []string) {
	for _, l := range txOps(tx) {
		f := strings.Fields(l)
		if len(f) < 5 || classMapProgram(f[4]) == "" {
			continue
		}
		switch f[0] + " " + f[1] {
		case "delete element":
			delElems++
		case "add element":
			addElems++
		case "add map":
			addMaps = append(addMaps, f[4])
		case "delete map":
			delMaps = append(delMaps, f[4])
		}
	}
	return
}

// TestManyPortsMovedReplaceTheClassMap: moving 1,000 of 10,000 rules onto
// another port would delete 1,000 elements of the program's class map,
// which costs the kernel seconds; the change writes the new version as a
// map under the program's other name instead (no element deleted), the
// entry chain switches to it in the same transaction, and the next sync
// deletes the old one. Moving them back switches back, and the table is
// then exactly a full render. A restarted driver (which builds programs
// with the first name) repairs a table that uses the other one, and a
// second restart writes nothing.
// unmerged is the configuration of the class map tests: with flow logs on
// no rules merge (merge.go), so the 1,000 rules move one by one, more
// partial members than a kept partition takes (sticky.go), and the program
// is partitioned afresh, which is what these tests are about.
var unmerged = Config{FlowLogGroup: 30}

func TestManyPortsMovedReplaceTheClassMap(t *testing.T) {
	if testing.Short() {
		t.Skip("the fake takes seconds to load 10,000 map elements")
	}
	s, pols := bigScenario()
	f := newFake()
	rec := &recorder{Interface: f}
	d := New(rec, unmerged)
	if err := d.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	apply := func(d *Driver, ps ...*calc.Policy) string {
		t.Helper()
		n := len(rec.txs)
		if err := d.Apply(t.Context(), &calc.Changes{InSync: true, PolicyUpdates: ps}); err != nil {
			t.Fatal(err)
		}
		if len(rec.txs) == n {
			return ""
		}
		return rec.last()
	}
	prog := ""
	for n := range d.want.sets {
		if p := classMapProgram(n); p != "" {
			prog = p
		}
	}
	first, other := programClassMap(prog), programClassMapAlt(prog)

	moved := onPort80(pols)
	for _, p := range moved {
		s.pol(p)
	}
	tx := apply(d, moved...)
	del, add, addMaps, delMaps := classMapOps(tx)
	if del != 0 || len(addMaps) != 1 || addMaps[0] != other || len(delMaps) != 0 || add < 9000 {
		t.Errorf("ports moved: %d element deletions, %d additions, maps added %v, deleted %v; want 0, ~9,000, [%s], []",
			del, add, addMaps, delMaps, other)
	}
	if !strings.Contains(tx, "vmap @"+other+" ") {
		t.Errorf("the entry chain does not switch to %s:\n%s", other, tx[:min(len(tx), 2000)])
	}
	if _, _, _, delMaps := classMapOps(apply(d)); len(delMaps) != 1 || delMaps[0] != first {
		t.Errorf("the sync after deleted maps %v, want [%s]", delMaps, first)
	}

	// A restart: the new driver's program uses the first name again.
	d2 := New(rec, unmerged)
	if err := d2.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	if _, _, addMaps, _ := classMapOps(rec.last()); len(addMaps) != 1 || addMaps[0] != first {
		t.Errorf("restart added maps %v, want [%s]", addMaps, first)
	}
	if _, _, _, delMaps := classMapOps(apply(d2)); len(delMaps) != 1 || delMaps[0] != other {
		t.Errorf("the sync after the restart deleted maps %v, want [%s]", delMaps, other)
	}
	full, _ := renderWith(t, s, unmerged)
	if got, want := sortedDump(f), sortedDump(full); got != want {
		t.Errorf("after a restart the table differs from a full render")
	}

	// Back and forth again: the running driver switches each time; back on
	// the first name, the table is a full render.
	for _, p := range pols[:100] {
		s.pol(p)
	}
	del, _, addMaps, _ = classMapOps(apply(d2, pols[:100]...))
	if del != 0 || len(addMaps) != 1 || addMaps[0] != other {
		t.Errorf("ports moved back: %d element deletions, maps added %v; want 0, [%s]", del, addMaps, other)
	}
	apply(d2)
	for _, p := range moved {
		s.pol(p)
	}
	del, _, addMaps, _ = classMapOps(apply(d2, moved...))
	if del != 0 || len(addMaps) != 1 || addMaps[0] != first {
		t.Errorf("ports moved again: %d element deletions, maps added %v; want 0, [%s]", del, addMaps, first)
	}
	apply(d2)
	full, _ = renderWith(t, s, unmerged)
	if got, want := sortedDump(f), sortedDump(full); got != want {
		t.Errorf("back on the first name the table differs from a full render")
	}
	d3 := New(rec, unmerged)
	n := len(rec.txs)
	if err := d3.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	apply(d3)
	for _, tx := range rec.txs[n:] {
		if strings.Contains(tx, "flush") || strings.Contains(tx, "delete") {
			t.Errorf("a restart after the switches rewrote:\n%s", tx[:min(len(tx), 2000)])
		}
	}
	// A few ports moved: the partition is kept (two partial members), no
	// element changes, no new map.
	few := withRule(pols[3], 9, func(r *calc.Rule) { r.Dst.Ports = ports(80, 81) })
	few = withRule(few, 19, func(r *calc.Rule) { r.Dst.Ports = ports(80, 81) })
	del, add, addMaps, _ = classMapOps(apply(d3, few))
	if del != 0 || add != 0 || len(addMaps) != 0 {
		t.Errorf("two ports moved: %d element deletions, %d additions, maps added %v; want none", del, add, addMaps)
	}
}

// TestKernelManyPortsMoved is the switch of class maps in the kernel, over
// netlink where it can: the 1,000 ports moved and back, each followed by
// the sync that deletes the map that went, a restart that repairs a table
// using the other name, and then the table equals one written whole by a
// driver that never switched.
func TestKernelManyPortsMoved(t *testing.T) {
	testenv.RequireRoot(t)
	n1, name1 := testenv.NewNS(t)
	d := New(newNSNFT(t, n1), unmerged)
	nl, _ := newNSNetlink(t, n1)
	d.SetNetlink(nl)
	s, pols := bigScenario()
	if err := d.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	apply := func(d *Driver, ps ...*calc.Policy) {
		t.Helper()
		for _, p := range ps {
			s.pol(p)
		}
		for range 2 { // the change, then the deletions it left
			if err := d.Apply(t.Context(), &calc.Changes{InSync: true, PolicyUpdates: ps}); err != nil {
				t.Fatal(err)
			}
			ps = nil
		}
	}
	list := func(name string) string {
		return sortElements(testenv.Sh(t, "ip", "netns", "exec", name, "nft", "list", "table", "inet", "tortie"))
	}
	apply(d, onPort80(pols)...)
	if l := list(name1); !strings.Contains(l, classMapAltSuffix+" ") || strings.Contains(l, classMapSuffix+" ") {
		t.Errorf("after the ports moved, the table does not use the other class map only")
	}
	// A restart while the other name is in use.
	d2 := New(newNSNFT(t, n1), unmerged)
	d2.SetNetlink(nl)
	if err := d2.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	apply(d2)
	apply(d2, pols[:100]...)

	n2, name2 := testenv.NewNS(t)
	whole := New(newNSNFT(t, n2), unmerged)
	if err := whole.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	a, b := list(name1), list(name2)
	// The running driver switched back to the other name: the same table
	// but for the map's name and the digest that covers it.
	if strings.Count(a, classMapAltSuffix) != 2 {
		t.Errorf("after the ports moved back, the table does not use the other class map")
	}
	// norm: the listing's chains, sets and maps in name order, the map's
	// name made the first one and the entry chains' digests left out.
	norm := func(l string) string {
		var blocks []string
		var cur []string
		for _, line := range strings.Split(strings.ReplaceAll(l, classMapAltSuffix, classMapSuffix), "\n") {
			if strings.Contains(line, entryComment) {
				continue
			}
			cur = append(cur, line)
			if line == "\t}" {
				blocks = append(blocks, strings.Join(cur, "\n"))
				cur = nil
			}
		}
		slices.Sort(blocks)
		return strings.Join(blocks, "\n")
	}
	// The 10,000 rules merge into 100 selector rules and one of nets (one
	// chain each) beside the allow-client policy's.
	if n := strings.Count(norm(b), "\n\tchain "); n < 100 {
		t.Fatalf("the listing has %d chains, want the merged rules' (is the listing read right?)", n)
	}
	if norm(a) != norm(b) {
		t.Errorf("the table differs from one written whole (map name and digest aside)")
	}
}
