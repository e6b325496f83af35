package kubecontrollers

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	npaversioned "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/ipam"
	"github.com/tortie/tortie/pkg/serve"
)

// Config is the controllers' configuration.
type Config struct {
	// Controllers to run (default AllControllers).
	Controllers []string
	// Kube is the API server client, with the controllers' identity.
	Kube kubernetes.Interface
	// Backend is the datastore.
	Backend datastore.Backend
	// PolicyAPI is the API server client for ClusterNetworkPolicies
	// (sigs.k8s.io/network-policy-api), with the controllers' identity;
	// the clusternetworkpolicy controller needs it.
	PolicyAPI npaversioned.Interface

	// LeaderElection runs the controllers only while this instance holds
	// the Lease LeaseNamespace/LeaseName (default kube-system,
	// tortie-kube-controllers) as Identity (default the host name and a
	// random suffix). Off, the instance always runs them.
	LeaderElection bool
	Identity       string
	LeaseNamespace string
	LeaseName      string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's
	// (defaults 15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// ReleaseOnCancel gives the lease up when Run's context ends, so that
	// another replica takes over at once rather than after LeaseDuration.
	ReleaseOnCancel bool

	// ReconcileInterval is how often every controller reconciles every key
	// (default 5m, as Calico's RECONCILER_PERIOD).
	ReconcileInterval time.Duration
	// EndpointGracePeriod is how long a pod must be gone before its
	// endpoints are deleted (default 1m).
	EndpointGracePeriod time.Duration
	// LeakGracePeriod is how long an address whose pod is gone is kept
	// before it is released (default 15m, Calico's).
	LeakGracePeriod time.Duration
	// Workers per controller (default 2).
	Workers int
	// SyncTimeout bounds one key's reconcile (default 1m).
	SyncTimeout time.Duration
	// RetryInterval and MaxRetryInterval bound the backoff of a key whose
	// reconcile failed (defaults 200ms and 30s).
	RetryInterval, MaxRetryInterval time.Duration
	// LivenessTimeout: /liveness fails when one key has been worked on for
	// longer (default 3m).
	LivenessTimeout time.Duration

	// HealthAddr and MetricsAddr are where /liveness and /readiness, and
	// /metrics, are served ("host:port", port 0 picks one; "": nowhere).
	HealthAddr, MetricsAddr string
	Logger                  *slog.Logger
	// Clock replaces time.Now for grace periods (tests).
	Clock func() time.Time
}

// Defaults fills in what is unset.
func (c Config) Defaults() Config {
	if c.Controllers == nil {
		c.Controllers = slices.Clone(AllControllers)
	}
	if c.LeaseNamespace == "" {
		c.LeaseNamespace = "kube-system"
	}
	if c.LeaseName == "" {
		c.LeaseName = "tortie-kube-controllers"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.LeaseDuration, 15*time.Second)
	def(&c.RenewDeadline, 10*time.Second)
	def(&c.RetryPeriod, 2*time.Second)
	def(&c.ReconcileInterval, 5*time.Minute)
	def(&c.EndpointGracePeriod, time.Minute)
	def(&c.LeakGracePeriod, ipam.DefaultLeakGracePeriod)
	def(&c.SyncTimeout, time.Minute)
	def(&c.RetryInterval, 200*time.Millisecond)
	def(&c.MaxRetryInterval, 30*time.Second)
	def(&c.LivenessTimeout, 3*time.Minute)
	if c.Workers == 0 {
		c.Workers = 2
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Identity == "" {
		host, _ := os.Hostname()
		c.Identity = host + "_" + rand.Text()[:8]
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

// Validate reports a configuration the controllers cannot run with.
func (c Config) Validate() error {
	var errs []error
	for _, name := range c.Controllers {
		if !slices.Contains(AllControllers, name) {
			errs = append(errs, fmt.Errorf("unknown controller %q (known: %s)", name, strings.Join(AllControllers, ", ")))
		}
	}
	if c.Kube == nil {
		errs = append(errs, errors.New("no Kubernetes client"))
	}
	if c.Backend == nil {
		errs = append(errs, errors.New("no datastore"))
	}
	if c.enabled(ControllerClusterNetworkPolicy) && c.PolicyAPI == nil {
		errs = append(errs, errors.New("no ClusterNetworkPolicy API client for the clusternetworkpolicy controller"))
	}
	if c.LeaderElection && (c.LeaseDuration <= c.RenewDeadline || c.RenewDeadline <= c.RetryPeriod || c.RetryPeriod <= 0) {
		errs = append(errs, fmt.Errorf("leader election: want lease duration (%v) > renew deadline (%v) > retry period (%v) > 0", c.LeaseDuration, c.RenewDeadline, c.RetryPeriod))
	}
	if c.Workers < 1 {
		errs = append(errs, fmt.Errorf("workers %d: want at least 1", c.Workers))
	}
	for what, d := range map[string]time.Duration{"reconcile interval": c.ReconcileInterval, "endpoint grace period": c.EndpointGracePeriod, "leak grace period": c.LeakGracePeriod, "sync timeout": c.SyncTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", what, d))
		}
	}
	if c.RetryInterval <= 0 || c.MaxRetryInterval < c.RetryInterval {
		errs = append(errs, fmt.Errorf("retry interval %v, maximum %v: want 0 < interval <= maximum", c.RetryInterval, c.MaxRetryInterval))
	}
	return errors.Join(errs...)
}

func (c Config) enabled(name string) bool { return slices.Contains(c.Controllers, name) }

// Server runs the controllers: health, metrics, leader election, and one
// term of controllers while leading.
type Server struct {
	cfg       Config
	log       *slog.Logger
	reg       *prometheus.Registry
	m         *metrics
	endpoints *serve.Listeners // health and metrics endpoints

	leading   atomic.Bool
	leader    atomic.Pointer[string]
	term      atomic.Pointer[term]
	forbidden atomic.Int64
}

// New checks the configuration and opens the health and metrics
// listeners (a port in use is an error here).
func New(cfg Config) (*Server, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kube-controllers: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, reg: prometheus.NewRegistry()}
	s.m = newMetrics(s.reg)
	var err error
	if s.endpoints, err = serve.Listen(cfg.HealthAddr, cfg.MetricsAddr, ""); err != nil {
		return nil, err
	}
	return s, nil
}

// HealthAddr is where /liveness and /readiness answer ("" if nowhere).
func (s *Server) HealthAddr() string { return s.endpoints.HealthAddr() }

// MetricsAddr is where /metrics answers ("" if nowhere).
func (s *Server) MetricsAddr() string { return s.endpoints.MetricsAddr() }

// Registry holds the controllers' metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Leading reports whether this instance runs the controllers now.
func (s *Server) Leading() bool { return s.leading.Load() }

// Forbidden counts the API server's refusals (403) this instance got: the
// controllers' RBAC lacks a permission.
func (s *Server) Forbidden() int64 { return s.forbidden.Load() }

// Synced reports whether this instance leads and every controller has
// finished its first full reconcile of the current term.
func (s *Server) Synced() bool {
	t := s.term.Load()
	if t == nil || !s.leading.Load() {
		return false
	}
	ok, _ := t.ready()
	return ok
}

// Ready says what /readiness says: a standby replica is ready (it has
// nothing to do); the leader once every controller finished its first
// full reconcile.
func (s *Server) Ready() (bool, string) {
	if !s.leading.Load() {
		if !s.cfg.LeaderElection {
			return false, "starting"
		}
		l := s.leader.Load()
		if l == nil || *l == "" {
			return true, "standby: no leader seen yet"
		}
		return true, "standby: the leader is " + *l
	}
	t := s.term.Load()
	if t == nil {
		return false, "leading: starting"
	}
	return t.ready()
}

// Run runs until ctx is done. With leader election it campaigns, runs a
// term of controllers while it leads, and campaigns again when it loses
// the lease (a term's caches are not trusted across a gap).
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	s.endpoints.Run(ctx, &wg, s.healthHandler(), promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}), s.log)
	defer wg.Wait()

	if !s.cfg.LeaderElection {
		s.setLeading(true)
		err := s.runTerm(ctx)
		s.setLeading(false)
		return err
	}
	id := s.cfg.Identity
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: s.cfg.LeaseNamespace, Name: s.cfg.LeaseName},
		Client:     s.cfg.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	for ctx.Err() == nil {
		// OnStartedLeading only hands the term's context over: the term
		// runs here, so two terms never overlap, and one ends (its
		// context is cancelled when renewing fails) before the next
		// campaign.
		leadCh := make(chan context.Context, 1)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   s.cfg.LeaseDuration,
			RenewDeadline:   s.cfg.RenewDeadline,
			RetryPeriod:     s.cfg.RetryPeriod,
			ReleaseOnCancel: s.cfg.ReleaseOnCancel,
			Name:            s.cfg.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(tctx context.Context) { leadCh <- tctx },
				OnStoppedLeading: func() {},
				OnNewLeader: func(who string) {
					s.leader.Store(&who)
					if who != id {
						s.log.Info("standing by: another replica leads", "leader", who, "identity", id)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		runDone := make(chan struct{})
		go func() { defer close(runDone); le.Run(ctx) }()
		select {
		case tctx := <-leadCh:
			s.log.Info("became leader: running the controllers", "identity", id, "lease", s.cfg.LeaseNamespace+"/"+s.cfg.LeaseName)
			s.setLeading(true)
			if err := s.runTerm(tctx); err != nil && tctx.Err() == nil {
				s.log.Error("controllers stopped", "error", err)
			}
			s.setLeading(false)
			<-runDone
			if ctx.Err() == nil {
				s.log.Warn("lost the leader lease: controllers stopped; campaigning again", "identity", id)
			}
		case <-runDone:
		}
	}
	return nil
}

func (s *Server) setLeading(on bool) {
	s.leading.Store(on)
	if on {
		s.m.leader.Set(1)
		s.m.terms.Inc()
	} else {
		s.m.leader.Set(0)
	}
}

// term is one leadership term: its caches and controllers.
type term struct {
	start       time.Time
	cachesReady atomic.Bool
	controllers []*controller
}

func (t *term) ready() (bool, string) {
	if !t.cachesReady.Load() {
		return false, "leading: waiting for the Kubernetes and datastore caches to sync"
	}
	var why []string
	for _, c := range t.controllers {
		if ok, w := c.status(); !ok {
			why = append(why, w)
		}
	}
	if len(why) > 0 {
		return false, strings.Join(why, "; ")
	}
	return true, "leading, in sync"
}

// runTerm builds fresh caches and controllers, waits for every cache to
// sync, and runs the controllers until ctx is done.
func (s *Server) runTerm(ctx context.Context) error {
	cfg := s.cfg
	t := &term{start: time.Now()}
	s.term.Store(t)
	log := cfg.Logger
	cl := client.New(cfg.Backend)
	im := ipam.New(cfg.Backend, ipam.Options{Logger: log})
	factory := informers.NewSharedInformerFactoryWithOptions(cfg.Kube, 0, informers.WithTransform(stripManagedFields))
	defer factory.Shutdown()

	var synced []cache.InformerSynced
	var stores []*store
	newStoreOf := func(kind string) *store {
		st := newStore(cfg.Backend, kind, log)
		stores = append(stores, st)
		synced = append(synced, st.hasSynced)
		return st
	}
	informer := func(inf cache.SharedIndexInformer, h cache.ResourceEventHandler) {
		_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
			if apierrors.IsForbidden(err) {
				s.forbidden.Add(1)
				log.Error("the API server refuses to list or watch: check the controllers' RBAC", "error", err)
				return
			}
			log.Warn("Kubernetes watch interrupted; relisting", "error", err)
		})
		if _, err := inf.AddEventHandler(h); err != nil {
			panic(err) // only after the informer stopped
		}
		synced = append(synced, inf.HasSynced)
	}
	w := func(name string) *writer { return &writer{c: cl, log: log, metrics: s.m, controller: name} }
	handler := func(enqueue func(obj any)) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { enqueue(obj) },
			UpdateFunc: func(_, obj any) { enqueue(obj) },
			DeleteFunc: func(obj any) { enqueue(obj) },
		}
	}
	byKey := func(c *controller) func(obj any) {
		return func(obj any) {
			if k, err := objectKey(obj); err == nil {
				c.enqueue(k)
			}
		}
	}

	var profiles, policies, weps, calicoNodes *store
	need := func(st **store, kind string) *store {
		if *st == nil {
			*st = newStoreOf(kind)
		}
		return *st
	}

	// namespace, serviceaccount, policy: conversions.
	conversions := map[string]*controller{}
	addConversion := func(name string, conv converter, st *store, inf cache.SharedIndexInformer) {
		cc := &conversionController{conv: conv, store: st, w: w(name), log: log.With("controller", name)}
		c := newController(name, cc, &cfg, s.m, t.start)
		conversions[name] = c
		t.controllers = append(t.controllers, c)
		informer(inf, handler(byKey(c)))
		st.onChange(func(old, cur v3.Resource) {
			r := cur
			if r == nil {
				r = old
			}
			if k := conv.keyOf(r); k != "" {
				c.enqueue(k)
			}
		})
	}
	if cfg.enabled(ControllerNamespace) {
		inf := factory.Core().V1().Namespaces()
		addConversion(ControllerNamespace, namespaceConverter(inf.Lister()), need(&profiles, v3.KindProfile), inf.Informer())
	}
	if cfg.enabled(ControllerServiceAccount) {
		inf := factory.Core().V1().ServiceAccounts()
		addConversion(ControllerServiceAccount, serviceAccountConverter(inf.Lister()), need(&profiles, v3.KindProfile), inf.Informer())
	}
	if cfg.enabled(ControllerPolicy) {
		inf := factory.Networking().V1().NetworkPolicies()
		addConversion(ControllerPolicy, policyConverter(inf.Lister()), need(&policies, v3.KindNetworkPolicy), inf.Informer())
	}

	podInf := factory.Core().V1().Pods()
	if cfg.enabled(ControllerWorkloadEndpoint) {
		st := need(&weps, v3.KindWorkloadEndpoint)
		ec := &endpointController{
			pods: podInf.Lister(), kube: cfg.Kube, store: st, w: w(ControllerWorkloadEndpoint),
			log: log.With("controller", ControllerWorkloadEndpoint), grace: cfg.EndpointGracePeriod, now: cfg.Clock,
			missing: map[string]time.Time{},
		}
		c := newController(ControllerWorkloadEndpoint, ec, &cfg, s.m, t.start)
		ec.requeue = c.enqueueAfter
		t.controllers = append(t.controllers, c)
		enqueue := byKey(c)
		informer(podInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: enqueue,
			UpdateFunc: func(old, cur any) {
				o, ok1 := old.(*corev1.Pod)
				n, ok2 := cur.(*corev1.Pod)
				if !ok1 || !ok2 || podChanged(o, n) {
					enqueue(cur)
				}
			},
			DeleteFunc: enqueue,
		})
		st.onChange(func(old, cur v3.Resource) {
			for _, r := range []v3.Resource{old, cur} {
				if r != nil {
					for _, k := range endpointPodKey(r) {
						c.enqueue(k)
					}
				}
			}
		})
	}

	if cfg.enabled(ControllerNode) {
		nodeInf := factory.Core().V1().Nodes()
		cn := need(&calicoNodes, v3.KindNode)
		ws := need(&weps, v3.KindWorkloadEndpoint)
		gc := &ipamGC{
			pods: podInf.Lister(), nodes: nodeInf.Lister(), kube: cfg.Kube, calicoNodes: cn, ipam: im,
			log: log.With("controller", "ipam-gc"), m: s.m, grace: cfg.LeakGracePeriod, now: cfg.Clock,
			seen: map[string]time.Time{},
		}
		gcc := newController("ipam-gc", gc, &Config{
			Workers: 1, ReconcileInterval: cfg.ReconcileInterval, SyncTimeout: 5 * cfg.SyncTimeout,
			RetryInterval: cfg.RetryInterval, MaxRetryInterval: cfg.MaxRetryInterval, Logger: log,
		}, s.m, t.start)
		gc.requeue = gcc.enqueueAfter
		nc := &nodeController{
			nodes: nodeInf.Lister(), kube: cfg.Kube, calicoNodes: cn, weps: ws, c: cl, ipam: im,
			w: w(ControllerNode), log: log.With("controller", ControllerNode), deleted: map[string]bool{},
			gcNow: func() { gcc.enqueue(gcKey) },
		}
		c := newController(ControllerNode, nc, &cfg, s.m, t.start)
		t.controllers = append(t.controllers, c, gcc)
		informer(nodeInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) {},
			DeleteFunc: func(obj any) {
				if k, err := objectKey(obj); err == nil {
					nc.sawDeletion(k)
					c.enqueue(k)
				}
			},
		})
		if !cfg.enabled(ControllerWorkloadEndpoint) {
			informer(podInf.Informer(), cache.ResourceEventHandlerFuncs{})
		}
		cn.onChange(func(old, cur v3.Resource) {
			if cur != nil {
				c.enqueue(nodeKey(cur.(*v3.Node)))
			}
		})
	}
	if cfg.enabled(ControllerClusterNetworkPolicy) {
		c, stop := s.newCNPController(t, newStoreOf(v3.KindGlobalNetworkPolicy), w(ControllerClusterNetworkPolicy))
		defer stop()
		t.controllers = append(t.controllers, c)
	}
	if weps != nil {
		weps.addIndex(indexPod, endpointPodKey)
		weps.addIndex(indexNode, endpointNode)
	}

	factory.Start(ctx.Done())
	var swg sync.WaitGroup
	for _, st := range stores {
		swg.Add(1)
		go func() { defer swg.Done(); st.run(ctx) }()
	}
	defer swg.Wait()
	log.Info("waiting for the Kubernetes and datastore caches", "controllers", strings.Join(cfg.Controllers, ","))
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	t.cachesReady.Store(true)
	log.Info("caches in sync: reconciling", "after", time.Since(t.start).Round(time.Millisecond))

	var cwg sync.WaitGroup
	for _, c := range t.controllers {
		cwg.Add(1)
		go func() { defer cwg.Done(); c.run(ctx) }()
	}
	cwg.Wait()
	return nil
}

// stripManagedFields drops what the controllers never read from every
// cached object (server-side apply bookkeeping is most of a pod's size).
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.ObjectMetaAccessor); ok {
		m.GetObjectMeta().SetManagedFields(nil)
	}
	return obj, nil
}

// healthHandler serves /liveness (no key has been worked on for longer
// than LivenessTimeout) and /readiness (Ready).
func (s *Server) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/liveness", func(w http.ResponseWriter, r *http.Request) {
		if t := s.term.Load(); t != nil && s.leading.Load() {
			now := time.Now()
			for _, c := range t.controllers {
				if d := c.stuckFor(now); d > s.cfg.LivenessTimeout {
					http.Error(w, fmt.Sprintf("controller %s stuck on one key for %v", c.name, d.Round(time.Second)), http.StatusServiceUnavailable)
					return
				}
			}
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readiness", func(w http.ResponseWriter, r *http.Request) {
		ok, why := s.Ready()
		if !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok: "+why)
	})
	return mux
}
