package kubecontrollers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/cache"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	npaversioned "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	npainformers "sigs.k8s.io/network-policy-api/pkg/client/informers/externalversions"
	npalisters "sigs.k8s.io/network-policy-api/pkg/client/listers/apis/v1alpha2"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// The clusternetworkpolicy controller: each ClusterNetworkPolicy
// (policy.networking.k8s.io, sigs.k8s.io/network-policy-api) is the
// GlobalNetworkPolicy "kcnp.kube-admin.<name>" (tier Admin) or
// "kcnp.kube-baseline.<name>" (tier Baseline), as k8s.ClusterNetworkPolicyToV3
// converts it. The key is the ClusterNetworkPolicy's name; both names it
// can have in etcd are its targets, so a policy moved from one tier to the
// other leaves nothing behind.
//
// The CRD is not part of Kubernetes. Without it the controller waits: it
// asks discovery every crdCheckInterval whether the API server serves
// ClusterNetworkPolicies, counts as ready meanwhile, and starts watching
// them (and reconciling, stale GlobalNetworkPolicies included) once it
// does. While it waits it writes nothing: an API server that has just
// started may serve a CRD's resources only some seconds after the rest, and
// deleting every kcnp.* policy then would open the cluster until they are
// written again. Removing the CRD deletes its objects first, and the watch
// delivers those deletions, so the policies go with them.

// ControllerClusterNetworkPolicy is the controller's name in
// ENABLED_CONTROLLERS. Calico's kube-controllers has no such controller
// (its ClusterNetworkPolicy support is in its Kubernetes datastore), so
// the name is tortie's.
const ControllerClusterNetworkPolicy = "clusternetworkpolicy"

// crdCheckInterval is how often the controller asks whether the
// ClusterNetworkPolicy CRD is served while it is not.
var crdCheckInterval = 5 * time.Second

var kindGNP = mustKind(v3.KindGlobalNetworkPolicy)

// cnpTiers are the ClusterNetworkPolicy tiers, each a Calico tier and so a
// name prefix of its own.
var cnpTiers = []cnpv1alpha2.Tier{cnpv1alpha2.AdminTier, cnpv1alpha2.BaselineTier}

// clusterNetworkPolicyOf returns the name of the ClusterNetworkPolicy a
// GlobalNetworkPolicy named name was converted from
// ("kcnp.kube-admin.<name>", "kcnp.kube-baseline.<name>"), or "" when it
// is not one.
func clusterNetworkPolicyOf(name string) string {
	for _, t := range cnpTiers {
		if rest, ok := strings.CutPrefix(name, k8s.ClusterNetworkPolicyName(t, "")); ok && rest != "" {
			return rest
		}
	}
	return ""
}

// DesiredClusterNetworkPolicy is the GlobalNetworkPolicy a
// ClusterNetworkPolicy stands for. It is k8s.ClusterNetworkPolicyToV3,
// with Calico's handling of a rule that cannot be converted (its
// K8sClusterNetworkPolicyToCalico): the rest of the policy is still
// enforced, a Deny or Pass rule that cannot be converted becomes a rule
// denying everything, and an Accept rule that cannot be converted is
// dropped. Either way no more is allowed than the policy says. Each such
// rule is named in problems.
//
// An error means nothing can be written: the policy's own fields (its
// name, which with the prefix may exceed 253 characters, or its subject's
// selectors) cannot be converted.
//
// The API server validates ClusterNetworkPolicies against the CRD first,
// so what reaches here fails only tortie's stricter checks: label
// selectors with an unknown operator or an invalid key or value (the CRD
// does not check them; as Calico selectors they would match more or fail
// to parse), and over-long names.
func DesiredClusterNetworkPolicy(cnp *cnpv1alpha2.ClusterNetworkPolicy) (gnp *v3.GlobalNetworkPolicy, problems []string, err error) {
	if gnp, err := k8s.ClusterNetworkPolicyToV3(cnp); err == nil {
		return gnp, nil, nil
	}
	bare := cnp.DeepCopy()
	bare.Spec.Ingress, bare.Spec.Egress = nil, nil
	out, err := k8s.ClusterNetworkPolicyToV3(bare)
	if err != nil {
		return nil, nil, err
	}
	// Rule by rule: the conversion of a policy with that rule alone is
	// the rule's share of the whole one.
	rule := func(dir string, i int, name string, action cnpv1alpha2.ClusterNetworkPolicyRuleAction, set func(*cnpv1alpha2.ClusterNetworkPolicy)) []v3.Rule {
		one := bare.DeepCopy()
		set(one)
		g, err := k8s.ClusterNetworkPolicyToV3(one)
		if err == nil {
			return append(g.Spec.Ingress, g.Spec.Egress...) // one of them is empty
		}
		what := fmt.Sprintf("%s rule %d", dir, i)
		if name != "" {
			what += fmt.Sprintf(" (%q)", name)
		}
		if action == cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept {
			problems = append(problems, fmt.Sprintf("%s dropped: %v", what, err))
			return nil
		}
		problems = append(problems, fmt.Sprintf("%s replaced by a rule denying everything: %v", what, err))
		return []v3.Rule{{Action: v3.Deny}}
	}
	var ingress, egress []v3.Rule
	for i, r := range cnp.Spec.Ingress {
		ingress = append(ingress, rule("ingress", i, r.Name, r.Action, func(c *cnpv1alpha2.ClusterNetworkPolicy) {
			c.Spec.Ingress = []cnpv1alpha2.ClusterNetworkPolicyIngressRule{r}
		})...)
	}
	for i, r := range cnp.Spec.Egress {
		egress = append(egress, rule("egress", i, r.Name, r.Action, func(c *cnpv1alpha2.ClusterNetworkPolicy) {
			c.Spec.Egress = []cnpv1alpha2.ClusterNetworkPolicyEgressRule{r}
		})...)
	}
	out.Spec.Ingress, out.Spec.Egress, out.Spec.Types = ingress, egress, nil
	if len(ingress) > 0 {
		out.Spec.Types = append(out.Spec.Types, v3.PolicyTypeIngress)
	}
	if len(egress) > 0 {
		out.Spec.Types = append(out.Spec.Types, v3.PolicyTypeEgress)
	}
	v3.SetDefaults(out)
	if err := v3.Validate(out); err != nil {
		return nil, nil, fmt.Errorf("ClusterNetworkPolicy %s converts to an invalid %s %s: %w", cnp.Name, v3.KindGlobalNetworkPolicy, out.Name, err)
	}
	return out, problems, nil
}

// cnpController reconciles one ClusterNetworkPolicy name.
type cnpController struct {
	src   *cnpSource
	store *store
	w     *writer
	log   *slog.Logger
}

func (c *cnpController) sync(ctx context.Context, name string) error {
	cnp, err := c.src.get(name)
	if err != nil {
		return err
	}
	var want *v3.GlobalNetworkPolicy
	var gone string // why the policies not wanted go
	switch {
	case cnp == nil:
		gone = "ClusterNetworkPolicy " + name + " no longer exists"
	default:
		gnp, problems, err := DesiredClusterNetworkPolicy(cnp)
		if err != nil {
			// Calico's datastore would not show such a policy at all; its
			// previous GlobalNetworkPolicy goes, so that what is enforced
			// is never a version the policy no longer says.
			c.log.Error("cannot convert ClusterNetworkPolicy; removing its GlobalNetworkPolicy, if any", "name", name, "error", err)
			gone = "ClusterNetworkPolicy " + name + " cannot be converted"
			break
		}
		if len(problems) > 0 {
			c.log.Warn("ClusterNetworkPolicy has rules that cannot be converted; enforcing the rest", "name", name, "rules", strings.Join(problems, "; "))
		}
		want = gnp
		gone = "ClusterNetworkPolicy " + name + " is now in tier " + string(cnp.Spec.Tier)
	}
	// The wanted policy first, then the other tier's: a policy moving
	// between tiers is never enforced by neither.
	if want != nil {
		why := "from ClusterNetworkPolicy " + name
		err := c.w.apply(ctx, kindGNP, "", want.Name, c.store.get("", want.Name), func(v3.Resource) (v3.Resource, bool, string) {
			// A fresh object each round: a write fills in identity.
			fresh, _, _ := DesiredClusterNetworkPolicy(cnp)
			return fresh, false, why
		})
		if err != nil {
			return err
		}
	}
	for _, t := range cnpTiers {
		target := k8s.ClusterNetworkPolicyName(t, name)
		if want != nil && target == want.Name {
			continue
		}
		err := c.w.apply(ctx, kindGNP, "", target, c.store.get("", target), func(v3.Resource) (v3.Resource, bool, string) {
			return nil, true, gone
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *cnpController) keys() []string {
	return unionKeys(c.src.names(), c.store, func(r v3.Resource) string { return clusterNetworkPolicyOf(r.GetName()) })
}

// unionKeys is a full reconcile's keys: those of the Kubernetes objects,
// and those of the stored objects a controller owns (keyOf "" for the
// others), each once.
func unionKeys(source []string, st *store, keyOf func(v3.Resource) string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(k string) {
		if k != "" && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, k := range source {
		add(k)
	}
	for _, r := range st.list() {
		add(keyOf(r))
	}
	return out
}

// cnpSource is the Kubernetes side: ClusterNetworkPolicies, once the API
// server serves them.
type cnpSource struct {
	disc      discovery.DiscoveryInterface
	client    npaversioned.Interface
	log       *slog.Logger
	forbidden func()
	enqueue   func(name string)

	mu      sync.Mutex
	state   string // "checking", "absent", "syncing", "synced"
	lastErr error
	lister  npalisters.ClusterNetworkPolicyLister
	factory npainformers.SharedInformerFactory
}

// served asks discovery whether the API server serves
// clusternetworkpolicies in policy.networking.k8s.io/v1alpha2; an error
// is neither answer.
func (s *cnpSource) served() (bool, error) {
	rl, err := s.disc.ServerResourcesForGroupVersion(cnpv1alpha2.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, r := range rl.APIResources {
		if r.Name == "clusternetworkpolicies" {
			return true, nil
		}
	}
	return false, nil
}

func (s *cnpSource) setState(state string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.lastErr = state, err
}

// wait returns once ClusterNetworkPolicies are served and their cache has
// synced (true), or when ctx ends (false).
func (s *cnpSource) wait(ctx context.Context) bool {
	logged := ""
	for {
		ok, err := s.served()
		switch {
		case err != nil:
			s.setState("checking", err)
			if logged != "error" {
				s.log.Warn("cannot tell whether the ClusterNetworkPolicy CRD is installed; asking again", "every", crdCheckInterval, "error", err)
				logged = "error"
			}
		case !ok:
			s.setState("absent", nil)
			if logged != "absent" {
				s.log.Info("the ClusterNetworkPolicy CRD (policy.networking.k8s.io/v1alpha2 clusternetworkpolicies) is not installed: waiting for it", "checking every", crdCheckInterval)
				logged = "absent"
			}
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(crdCheckInterval):
		}
	}
	s.setState("syncing", nil)
	s.log.Info("the ClusterNetworkPolicy CRD is installed: watching ClusterNetworkPolicies")
	f := npainformers.NewSharedInformerFactoryWithOptions(s.client, 0, npainformers.WithTransform(stripManagedFields))
	inf := f.Policy().V1alpha2().ClusterNetworkPolicies()
	_ = inf.Informer().SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		switch {
		case apierrors.IsForbidden(err):
			s.forbidden()
			s.log.Error("the API server refuses to list or watch ClusterNetworkPolicies: check the controllers' RBAC", "error", err)
		case apierrors.IsNotFound(err):
			s.log.Warn("ClusterNetworkPolicies are no longer served (the CRD was removed?); listing again", "error", err)
		default:
			s.log.Warn("Kubernetes watch interrupted; relisting", "error", err)
		}
	})
	key := func(obj any) {
		if k, err := objectKey(obj); err == nil {
			s.enqueue(k)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: key, UpdateFunc: func(_, obj any) { key(obj) }, DeleteFunc: key,
	}); err != nil {
		panic(err) // only after the informer stopped
	}
	s.mu.Lock()
	s.factory, s.lister = f, inf.Lister()
	s.mu.Unlock()
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return false
	}
	s.setState("synced", nil)
	return true
}

// waiting is the controller's readiness until wait returns: without the
// CRD there is nothing to do, so it is ready.
func (s *cnpSource) waiting() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case "absent":
		return true, ""
	case "syncing":
		return false, ControllerClusterNetworkPolicy + ": waiting for the ClusterNetworkPolicy cache to sync"
	}
	why := ControllerClusterNetworkPolicy + ": checking whether the ClusterNetworkPolicy CRD is installed"
	if s.lastErr != nil {
		why += ": " + s.lastErr.Error()
	}
	return false, why
}

// get returns the ClusterNetworkPolicy name (nil when it does not exist).
// Only called once wait has returned true.
func (s *cnpSource) get(name string) (*cnpv1alpha2.ClusterNetworkPolicy, error) {
	s.mu.Lock()
	l := s.lister
	s.mu.Unlock()
	if l == nil {
		return nil, errors.New("ClusterNetworkPolicies are not watched yet")
	}
	cnp, err := l.Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return cnp, err
}

func (s *cnpSource) names() []string {
	s.mu.Lock()
	l := s.lister
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	cnps, err := l.List(labels.Everything())
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(cnps))
	for _, c := range cnps {
		out = append(out, c.Name)
	}
	return out
}

// shutdown stops the informer, if it was started (after the term's
// context ended).
func (s *cnpSource) shutdown() {
	s.mu.Lock()
	f := s.factory
	s.mu.Unlock()
	if f != nil {
		f.Shutdown()
	}
}

// newCNPController builds the clusternetworkpolicy controller of a term,
// on the GlobalNetworkPolicy cache st. stop must be called after the
// term's context ended.
func (s *Server) newCNPController(t *term, st *store, w *writer) (c *controller, stop func()) {
	cfg := &s.cfg
	log := cfg.Logger.With("controller", ControllerClusterNetworkPolicy)
	src := &cnpSource{
		disc: cfg.Kube.Discovery(), client: cfg.PolicyAPI, log: log, state: "checking",
		forbidden: func() { s.forbidden.Add(1) },
	}
	cc := &cnpController{src: src, store: st, w: w, log: log}
	c = newController(ControllerClusterNetworkPolicy, cc, cfg, s.m, t.start)
	c.wait, c.waiting = src.wait, src.waiting
	src.enqueue = c.enqueue
	st.onChange(func(old, cur v3.Resource) {
		r := cur
		if r == nil {
			r = old
		}
		if n := clusterNetworkPolicyOf(r.GetName()); n != "" {
			c.enqueue(n)
		}
	})
	return c, src.shutdown
}
