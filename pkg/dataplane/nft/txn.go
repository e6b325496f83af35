package nft

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"sigs.k8s.io/knftables"
)

// A transaction is built as a list of operations and then written one of
// two ways: as an `nft -f` script through knftables (any operation, what a
// full sync and the tests' fake use), or straight over netlink (Netlink:
// an incremental sync whose operations all have a netlink form). Both are
// one atomic kernel transaction.

type opKind uint8

const (
	opAddTable opKind = iota
	opAddSet          // set: the declaration (a set or a map)
	opAddChain        // chain: the declaration (base or regular)
	opFlushChain
	opAddRule // rule
	opAddElem // set, elem
	opDelElem // set, elem
	opFlushSet
	opDelSet // set: the kernel's declaration
	opDelChain
)

type op struct {
	kind  opKind
	name  string // the chain's or set's name
	set   *setT
	chain *chainT
	rule  ruleT
	elem  elemT
}

type txn struct{ ops []op }

func (t *txn) add(o op) { t.ops = append(t.ops, o) }

// tableComment is the table's comment, written with every nft transaction.
const tableComment = "tortie: network policy (owned by tortie-node)"

// elemsPerStatement is how many consecutive additions (or deletions) of
// one set's elements knft writes as one `nft` statement when asked to
// merge them. nft parses one statement of many elements several times
// faster than as many statements of one: 100,000 addresses load in about
// 0.3 s rather than 2 s here.
const elemsPerStatement = 1000

// fullSkeleton is what netlink does not create here, the table and its
// base chains, from a full sync's operations: nil for any other sync, and
// when no base chain is created (the table exists then, with its base
// chains).
func fullSkeleton(scope syncScope, ops []op) []op {
	if scope != syncFull {
		return nil
	}
	var sk []op
	for i := range ops {
		if ops[i].kind == opAddChain && ops[i].chain.base != nil {
			sk = append(sk, ops[i])
		}
	}
	if sk == nil {
		return nil
	}
	return append([]op{{kind: opAddTable}}, sk...)
}

// knft renders the operations as a knftables transaction. With merge,
// consecutive element additions (or deletions) of one set (not a map)
// become one element statement that lists them all, as nft takes them;
// knftables' fake, which keeps elements as objects, must not be given that.
func (t *txn) knft(tx *knftables.Transaction, merge bool) *knftables.Transaction {
	for i := 0; i < len(t.ops); i++ {
		o := t.ops[i]
		if merge && (o.kind == opAddElem || o.kind == opDelElem) && !o.set.isMap {
			keys := []string{strings.Join(o.elem.key, " . ")}
			for i+1 < len(t.ops) && len(keys) < elemsPerStatement {
				n := t.ops[i+1]
				if n.kind != o.kind || n.name != o.name {
					break
				}
				keys = append(keys, strings.Join(n.elem.key, " . "))
				i++
			}
			e := &knftables.Element{Set: o.name, Key: []string{strings.Join(keys, ", ")}}
			if o.kind == opAddElem {
				tx.Add(e)
			} else {
				tx.Delete(e)
			}
			continue
		}
		switch o.kind {
		case opAddTable:
			tx.Add(&knftables.Table{Comment: knftables.PtrTo(tableComment)})
		case opAddSet:
			if o.set.isMap {
				tx.Add(&knftables.Map{Name: o.name, Type: o.set.typ, Flags: o.set.flags(), Comment: knftables.PtrTo(o.set.comment)})
			} else {
				tx.Add(&knftables.Set{Name: o.name, Type: o.set.typ, Flags: o.set.flags(), Comment: knftables.PtrTo(o.set.comment)})
			}
		case opAddChain:
			c := &knftables.Chain{Name: o.name}
			if b := o.chain.base; b != nil {
				c.Type, c.Hook, c.Priority = knftables.PtrTo(b.typ), knftables.PtrTo(b.hook), knftables.PtrTo(b.prio)
				c.Policy = knftables.PtrTo(knftables.AcceptPolicy)
			}
			tx.Add(c)
		case opFlushChain:
			tx.Flush(&knftables.Chain{Name: o.name})
		case opAddRule:
			tx.Add(&knftables.Rule{Chain: o.name, Rule: o.rule.text, Comment: knftables.PtrTo(o.rule.comment)})
		case opAddElem, opDelElem:
			e := &knftables.Element{Key: o.elem.key}
			if o.set.isMap {
				e.Map, e.Value = o.name, o.elem.value
			} else {
				e.Set = o.name
			}
			if o.kind == opAddElem {
				tx.Add(e)
			} else {
				tx.Delete(e)
			}
		case opFlushSet:
			if o.set.isMap {
				tx.Flush(&knftables.Map{Name: o.name})
			} else {
				tx.Flush(&knftables.Set{Name: o.name})
			}
		case opDelSet:
			if o.set.isMap {
				tx.Delete(&knftables.Map{Name: o.name})
			} else {
				tx.Delete(&knftables.Set{Name: o.name})
			}
		case opDelChain:
			tx.Delete(&knftables.Chain{Name: o.name})
		}
	}
	return tx
}

// run writes tx: over netlink when the driver has a Netlink, every
// operation can be encoded and the batch is not too big; through nft
// otherwise. Either way tx is one kernel transaction, applied whole or not
// at all: a ctx done before the write returns ctx.Err() and writes
// nothing, and one done during it interrupts the write (the kernel then
// has tx or not, and the error makes the next sync a full one, which lists
// what it has).
//
// Two exceptions, both over netlink and neither changing a verdict before
// tx's rules do:
//   - a full sync that creates base chains (a first start, or a table
//     deleted under the driver): netlink does not create tables and base
//     chains here, so nft first writes the table and those chains, empty,
//     with policy accept (hooked but empty, they let every packet through,
//     as no table does), and the rest goes over netlink;
//   - sets that tx creates with many elements go first, in transactions
//     of their own (splitNewSets): no rule refers to them before tx's.
//
// A cold start's 100,000 set elements so skip nft, which takes two to
// three times as long to write them (BenchmarkKernelColdSync100k: 1.06–1.49
// s against 0.40–0.46 s).
func (d *Driver) run(ctx context.Context, tx *txn, scope syncScope) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.nl != nil {
		var writeBase func() error
		if sk := fullSkeleton(scope, tx.ops); sk != nil {
			writeBase = func() error {
				if err := d.nft.Run(ctx, (&txn{ops: sk}).knft(d.nft.NewTransaction(), false)); err != nil {
					return fmt.Errorf("nft transaction creating the table's base chains (before the rest over netlink): %w", err)
				}
				return nil
			}
		}
		t0 := time.Now()
		err := d.nl.run(ctx, d.cfg.TableName, tx.ops, writeBase)
		if !errors.Is(err, errNotEncodable) {
			d.nl.observe(time.Since(t0), err)
			if err != nil {
				return fmt.Errorf("netlink transaction (%d operations): %w", len(tx.ops), err)
			}
			return nil
		}
		d.nl.notEncodable(err)
	}
	if err := d.nft.Run(ctx, tx.knft(d.nft.NewTransaction(), d.mergeElems)); err != nil {
		return fmt.Errorf("nft transaction (%d operations): %w", len(tx.ops), err)
	}
	return nil
}
