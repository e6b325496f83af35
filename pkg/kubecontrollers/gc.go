package kubecontrollers

import (
	"fmt"
	"time"

	"github.com/tortie/tortie/pkg/ipam"
)

// IPAM garbage collection, decided purely: which allocations that no
// endpoint and no node uses (ipam.Check's leaks) and which blocks of
// departed nodes are garbage, given what is known of Kubernetes and of the
// Calico Nodes. The driver (nodes.go) confirms each verdict with the API
// server before it releases anything.

// Facts is what the garbage collector knows of both sides.
type Facts struct {
	PodExists        func(namespace, name string) bool
	K8sNodeExists    func(name string) bool
	CalicoNodeExists func(name string) bool
}

// Verdict is what becomes of one leaked allocation.
type Verdict int

const (
	// Keep: not garbage, or not ours to judge.
	Keep Verdict = iota
	// Wait: garbage once it has been so for the grace period.
	Wait
	// ReleaseNow: its node is gone, and so are the node's pods.
	ReleaseNow
)

func (v Verdict) String() string {
	return [...]string{"keep", "wait", "release"}[v]
}

// JudgeLeak decides about an allocation that no endpoint and no node uses,
// from the attributes the CNI plugin (or node startup) stored with it, as
// Calico's IPAM garbage collector does:
//
//   - a pod's address (attributes namespace and pod): kept while the pod
//     exists (it is being set up: addresses are allocated before the
//     endpoint is written); released at once when the node it was
//     allocated on exists neither in Kubernetes nor as a Calico Node;
//     otherwise released after the grace period;
//   - an address of a node (a tunnel address: attribute node, no pod):
//     released at once when that node exists neither in Kubernetes nor as
//     a Calico Node;
//   - anything else (a workload outside Kubernetes, an address allocated
//     by hand) is not the controllers' to judge: `tortie ipam check
//     --release-leaks` is.
func JudgeLeak(attrs map[string]string, f Facts) Verdict {
	node := attrs[ipam.AttrNode]
	nodeGone := node != "" && !f.K8sNodeExists(node) && !f.CalicoNodeExists(node)
	ns, pod := attrs[ipam.AttrNamespace], attrs[ipam.AttrPod]
	switch {
	case ns != "" && pod != "":
		if f.PodExists(ns, pod) {
			return Keep
		}
		if nodeGone {
			return ReleaseNow
		}
		return Wait
	case nodeGone:
		return ReleaseNow
	}
	return Keep
}

// LeakID names one allocation: an address given to a handle, at a
// sequence number (a released and re-allocated address is another
// allocation).
func LeakID(l ipam.Leak) string {
	return fmt.Sprintf("%s/%s/%d", l.Addr, l.Handle, l.SequenceNumber)
}

// GCPlan is what one garbage collection round releases.
type GCPlan struct {
	Release []ipam.Leak
	// Why says, per LeakID of Release, why it goes.
	Why map[string]string
	// Blocks are blocks whose node is gone from both sides: their
	// affinity is released.
	Blocks []ipam.BlockProblem
	// Seen is when each allocation still waiting was first seen as
	// garbage: the next round's input.
	Seen map[string]time.Time
	// Next is when the oldest waiting allocation's grace ends (zero: none
	// waits).
	Next time.Time
}

// PlanGC decides a round: seen says since when each allocation has been
// garbage (from the previous round; entries of allocations no longer
// garbage are dropped), now is the time of this round.
func PlanGC(r *ipam.Report, f Facts, seen map[string]time.Time, now time.Time, grace time.Duration) GCPlan {
	p := GCPlan{Why: map[string]string{}, Seen: map[string]time.Time{}}
	for _, l := range r.Leaks {
		id := LeakID(l)
		switch JudgeLeak(l.Attrs, f) {
		case ReleaseNow:
			p.Release = append(p.Release, l)
			p.Why[id] = fmt.Sprintf("node %s is gone", l.Attrs[ipam.AttrNode])
		case Wait:
			first, ok := seen[id]
			if !ok {
				first = now
			}
			if now.Sub(first) >= grace {
				p.Release = append(p.Release, l)
				p.Why[id] = fmt.Sprintf("pod %s/%s gone for %v", l.Attrs[ipam.AttrNamespace], l.Attrs[ipam.AttrPod], now.Sub(first).Round(time.Second))
				continue
			}
			p.Seen[id] = first
			if end := first.Add(grace); p.Next.IsZero() || end.Before(p.Next) {
				p.Next = end
			}
		}
	}
	for _, b := range r.OrphanBlocks {
		if !f.K8sNodeExists(b.Node) && !f.CalicoNodeExists(b.Node) {
			p.Blocks = append(p.Blocks, b)
		}
	}
	return p
}
