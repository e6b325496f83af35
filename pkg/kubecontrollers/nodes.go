package kubecontrollers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/ipam"
)

// The node controller. Its key is a Kubernetes Node name. When that Node
// is gone (the API server confirms it), every Calico Node that belongs to
// it (NodeBelongsTo) is removed as Calico's node deletion removes one:
// the endpoints on it, the BGPPeers of that node, its per-node
// FelixConfiguration and BGPConfiguration ("node.<name>"), the Node
// resource itself, then its addresses and block affinities in IPAM.
// Each step is idempotent and every delete a compare-and-swap, so a crash
// half way is finished by the next reconcile (and what IPAM still holds
// for a node that no longer exists by the garbage collector below).
type nodeController struct {
	nodes       listerscorev1.NodeLister
	kube        kubernetes.Interface
	calicoNodes *store
	weps        *store
	c           *client.Client
	ipam        *ipam.IPAM
	w           *writer
	log         *slog.Logger
	// gcNow asks the IPAM garbage collector for a round.
	gcNow func()

	mu sync.Mutex
	// deleted are Kubernetes Nodes whose deletion this instance saw: a
	// Calico Node of that name without orchRefs is theirs too.
	deleted map[string]bool
}

func (c *nodeController) sawDeletion(name string) {
	c.mu.Lock()
	c.deleted[name] = true
	c.mu.Unlock()
}

func (c *nodeController) wasDeleted(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deleted[name]
}

func (c *nodeController) keys() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range c.calicoNodes.list() {
		if k := K8sNodeName(r.(*v3.Node)); k != "" && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	c.mu.Lock()
	for k := range c.deleted {
		if !seen[k] {
			out = append(out, k)
		}
	}
	c.mu.Unlock()
	return out
}

func (c *nodeController) sync(ctx context.Context, key string) error {
	if _, err := c.nodes.Get(key); err == nil {
		c.mu.Lock()
		delete(c.deleted, key)
		c.mu.Unlock()
		return nil
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	deletionSeen := c.wasDeleted(key)
	var mine []*v3.Node
	for _, r := range c.calicoNodes.list() {
		if n := r.(*v3.Node); NodeBelongsTo(n, key, deletionSeen) {
			mine = append(mine, n)
		}
	}
	if len(mine) == 0 {
		c.mu.Lock()
		delete(c.deleted, key)
		c.mu.Unlock()
		return nil
	}
	if _, err := c.kube.CoreV1().Nodes().Get(ctx, key, metav1.GetOptions{}); err == nil {
		return nil // the cache is behind
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("confirming Kubernetes Node %s is gone: %w", key, err)
	}
	for _, n := range mine {
		if err := c.removeNode(ctx, n, key); err != nil {
			return fmt.Errorf("removing Calico Node %s: %w", n.Name, err)
		}
	}
	c.mu.Lock()
	delete(c.deleted, key)
	c.mu.Unlock()
	c.gcNow()
	return nil
}

// removeNode removes the Calico Node n of the deleted Kubernetes Node
// k8sName and everything that is only its.
func (c *nodeController) removeNode(ctx context.Context, n *v3.Node, k8sName string) error {
	name := n.Name
	why := fmt.Sprintf("Kubernetes Node %s was deleted", k8sName)
	for _, r := range c.weps.byIndex(indexNode, name) {
		wep := r.(*v3.WorkloadEndpoint)
		err := c.w.apply(ctx, kindWEP, wep.Namespace, wep.Name, wep, func(cur v3.Resource) (v3.Resource, bool, string) {
			if cur == nil || cur.(*v3.WorkloadEndpoint).Spec.Node != name {
				return nil, false, ""
			}
			return nil, true, "its node " + name + " is being removed: " + why
		})
		if err != nil {
			return err
		}
	}
	peers, _, err := c.c.List(ctx, kindBGPPeer, "")
	if err != nil {
		return err
	}
	for _, p := range peers {
		if p.(*v3.BGPPeer).Spec.Node != name {
			continue
		}
		err := c.w.apply(ctx, kindBGPPeer, "", p.GetName(), p, func(cur v3.Resource) (v3.Resource, bool, string) {
			if cur == nil || cur.(*v3.BGPPeer).Spec.Node != name {
				return nil, false, ""
			}
			return nil, true, "a peering of node " + name + ": " + why
		})
		if err != nil {
			return err
		}
	}
	for _, k := range []*v3.KindInfo{kindFelixConf, kindBGPConf} {
		if err := c.deleteIfThere(ctx, k, "node."+name, "the per-node configuration of node "+name+": "+why); err != nil {
			return err
		}
	}
	err = c.w.apply(ctx, kindNode, "", name, c.calicoNodes.get("", name), func(cur v3.Resource) (v3.Resource, bool, string) {
		if cur == nil || !NodeBelongsTo(cur.(*v3.Node), k8sName, true) {
			return nil, false, ""
		}
		return nil, true, why
	})
	if err != nil {
		return err
	}

	// IPAM: every address allocated on the node (its pods', its tunnel
	// addresses) and its blocks. With the endpoints and the Node gone,
	// Check reports the addresses as leaks.
	rep, err := c.ipam.Check(ctx)
	if err != nil {
		return err
	}
	only := *rep
	only.Leaks = nil
	for _, l := range rep.Leaks {
		if l.Attrs[ipam.AttrNode] == name {
			only.Leaks = append(only.Leaks, l)
		}
	}
	only.OrphanBlocks, only.AffinityProblems, only.HandleProblems, only.Duplicates, only.Unallocated = nil, nil, nil, nil, nil
	res, err := c.ipam.ReleaseLeaks(ctx, &only, 0)
	if err != nil {
		return err
	}
	if err := c.ipam.ReleaseAffinity(ctx, name); err != nil {
		return err
	}
	c.log.Info("removed Calico Node "+name+": "+why, "node", name, "releasedAddresses", res.ReleasedIPs, "changedMeanwhile", res.Changed)
	if c.w.metrics != nil {
		c.w.metrics.ipamReleased.WithLabelValues("address").Add(float64(res.ReleasedIPs))
	}
	return nil
}

func (c *nodeController) deleteIfThere(ctx context.Context, k *v3.KindInfo, name, why string) error {
	cur, err := c.c.Get(ctx, k, "", name)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.w.apply(ctx, k, "", name, cur, func(cur v3.Resource) (v3.Resource, bool, string) {
		return nil, cur != nil, why
	})
}

// gcKey is the IPAM garbage collector's one key.
const gcKey = "ipam"

// ipamGC is Calico's IPAM garbage collection, as one reconciler with one
// key: ipam.Check finds what nothing uses, PlanGC judges it, the API
// server confirms each verdict, ipam.ReleaseLeaks releases it (each
// address only if it still has the handle and sequence number Check saw).
type ipamGC struct {
	pods        listerscorev1.PodLister
	nodes       listerscorev1.NodeLister
	kube        kubernetes.Interface
	calicoNodes *store
	ipam        *ipam.IPAM
	log         *slog.Logger
	m           *metrics
	grace       time.Duration
	now         func() time.Time
	requeue     func(key string, after time.Duration)

	mu   sync.Mutex
	seen map[string]time.Time
}

func (g *ipamGC) keys() []string { return []string{gcKey} }

func (g *ipamGC) sync(ctx context.Context, _ string) error {
	rep, err := g.ipam.Check(ctx)
	if err != nil {
		return err
	}
	facts := Facts{
		PodExists: func(ns, name string) bool {
			_, err := g.pods.Pods(ns).Get(name)
			return err == nil
		},
		K8sNodeExists: func(name string) bool {
			_, err := g.nodes.Get(name)
			return err == nil
		},
		CalicoNodeExists: func(name string) bool { return g.calicoNodes.get("", name) != nil },
	}
	g.mu.Lock()
	plan := PlanGC(rep, facts, g.seen, g.now(), g.grace)
	g.seen = plan.Seen
	g.mu.Unlock()
	if !plan.Next.IsZero() {
		g.requeue(gcKey, time.Until(plan.Next)+time.Second)
	}
	if len(plan.Release) == 0 && len(plan.Blocks) == 0 {
		return nil
	}

	// What the caches say, the API server must confirm.
	gonePods, goneNodes := map[string]bool{}, map[string]bool{}
	podGone := func(ns, name string) (bool, error) {
		k := ns + "/" + name
		if v, ok := gonePods[k]; ok {
			return v, nil
		}
		_, err := g.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
		gonePods[k] = err != nil
		return err != nil, nil
	}
	nodeGone := func(name string) (bool, error) {
		if v, ok := goneNodes[name]; ok {
			return v, nil
		}
		_, err := g.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
		goneNodes[name] = err != nil
		return err != nil, nil
	}
	only := *rep
	only.Leaks, only.OrphanBlocks = nil, nil
	only.AffinityProblems, only.HandleProblems, only.Duplicates, only.Unallocated = nil, nil, nil, nil
	for _, l := range plan.Release {
		gone := true
		if ns, pod := l.Attrs[ipam.AttrNamespace], l.Attrs[ipam.AttrPod]; ns != "" && pod != "" {
			if gone, err = podGone(ns, pod); err != nil {
				return err
			}
		}
		if n := l.Attrs[ipam.AttrNode]; gone && JudgeLeak(l.Attrs, facts) == ReleaseNow {
			if gone, err = nodeGone(n); err != nil {
				return err
			}
		}
		if !gone {
			continue
		}
		g.log.Info("releasing address: "+plan.Why[LeakID(l)], "address", l.Addr, "handle", l.Handle, "block", l.Block)
		only.Leaks = append(only.Leaks, l)
	}
	for _, b := range plan.Blocks {
		gone, err := nodeGone(b.Node)
		if err != nil {
			return err
		}
		if gone {
			g.log.Info("releasing the block affinities of node "+b.Node+": it exists neither in Kubernetes nor as a Calico Node", "block", b.Block)
			only.OrphanBlocks = append(only.OrphanBlocks, b)
		}
	}
	res, err := g.ipam.ReleaseLeaks(ctx, &only, 0)
	if err != nil {
		return err
	}
	g.m.ipamReleased.WithLabelValues("address").Add(float64(res.ReleasedIPs))
	g.m.ipamReleased.WithLabelValues("node_blocks").Add(float64(res.ReleasedNodes))
	if res.ReleasedIPs+res.ReleasedNodes > 0 || res.Changed > 0 {
		g.log.Info("IPAM garbage collected", "addresses", res.ReleasedIPs, "nodesBlocks", res.ReleasedNodes, "changedMeanwhile", res.Changed)
	}
	return errors.Join(res.Errors...)
}
