package kubecontrollers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	npaversioned "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"

	"github.com/tortie/tortie/deploy"
	"github.com/tortie/tortie/internal/testenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/kube/kubetest"
)

// The tests run the controllers against a real kube-apiserver and a real
// etcd, as the ServiceAccount deploy/tortie.yaml gives them, with exactly
// the RBAC that manifest grants: a refusal (403) fails the test.

func TestMain(m *testing.M) { kubetest.Main(m) }

const saUser = "system:serviceaccount:kube-system:tortie-kube-controllers"

var saGroups = []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}

var rbacDone sync.Map // *kubetest.Cluster -> bool

// applyRBAC applies the manifest's objects named tortie-kube-controllers
// (the ServiceAccount and its roles and bindings) to c, once.
func applyRBAC(t testing.TB, c *kubetest.Cluster) {
	t.Helper()
	if _, done := rbacDone.Load(c); done {
		return
	}
	var docs []string
	for _, doc := range strings.Split(string(deploy.Manifest), "\n---") {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("deploy/tortie.yaml: %v", err)
		}
		switch head.Kind {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if head.Metadata.Name == "tortie-kube-controllers" {
				docs = append(docs, doc)
			}
		}
	}
	if len(docs) < 5 {
		t.Fatalf("deploy/tortie.yaml: %d RBAC documents for tortie-kube-controllers, want a ServiceAccount, roles and bindings", len(docs))
	}
	c.Apply(t, strings.Join(docs, "\n---\n"))
	rbacDone.Store(c, true)
}

type harness struct {
	c     *kubetest.Cluster
	be    *datastore.Etcd
	cl    *client.Client
	kube  kubernetes.Interface // the controllers' identity
	admin kubernetes.Interface
	// policy is the ClusterNetworkPolicy client, the controllers' identity.
	policy npaversioned.Interface
}

func newHarness(t *testing.T, c *kubetest.Cluster) *harness {
	t.Helper()
	applyRBAC(t, c)
	etcd := etcdtest.Start(t)
	be := etcdtest.NewClient(t, etcd)
	kube, err := kubernetes.NewForConfig(c.Server.ImpersonatingConfig(saUser, saGroups...))
	if err != nil {
		t.Fatal(err)
	}
	policy, err := npaversioned.NewForConfig(c.Server.ImpersonatingConfig(saUser, saGroups...))
	if err != nil {
		t.Fatal(err)
	}
	return &harness{c: c, be: be, cl: client.New(be), kube: kube, admin: c.Client, policy: policy}
}

// instance is one running tortie-kube-controllers.
type instance struct {
	*Server
	cancel context.CancelFunc
	done   chan error
	log    *testenv.LogBuffer
}

// start runs controllers as the ServiceAccount until the test ends (or
// stop); mod adjusts the configuration.
func (h *harness) start(t *testing.T, mod func(*Config)) *instance {
	t.Helper()
	buf := &testenv.LogBuffer{}
	cfg := Config{
		Kube: h.kube, PolicyAPI: h.policy, Backend: h.be,
		Logger:              slog.New(slog.NewTextHandler(io.MultiWriter(buf, testLogWriter(t)), &slog.HandlerOptions{Level: slog.LevelDebug})),
		ReconcileInterval:   time.Minute,
		EndpointGracePeriod: 2 * time.Second,
		LeakGracePeriod:     3 * time.Second,
		HealthAddr:          "127.0.0.1:0",
		MetricsAddr:         "127.0.0.1:0",
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{Server: srv, cancel: cancel, done: make(chan error, 1), log: buf}
	go func() { in.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		in.stop(t)
		if n := srv.Forbidden(); n > 0 {
			t.Errorf("the API server refused the controllers %d times (RBAC of deploy/tortie.yaml)", n)
		}
		if strings.Contains(buf.String(), "forbidden") {
			t.Errorf("a request was forbidden:\n%s", grepLines(buf.String(), "forbidden"))
		}
	})
	return in
}

func (in *instance) stop(t *testing.T) {
	in.cancel()
	select {
	case err, ok := <-in.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(in.done)
		}
	case <-time.After(time.Minute):
		t.Error("controllers did not stop within a minute")
	}
}

func (in *instance) waitSynced(t *testing.T, within time.Duration) {
	t.Helper()
	eventually(t, within, func() error {
		if ok, why := in.Ready(); !ok || !in.Synced() {
			return fmt.Errorf("not synced: %s", why)
		}
		return nil
	})
}

// eventually retries f until it succeeds or within passes.
func eventually(t testing.TB, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stored is the value etcd holds at the key of kind/ns/name, "" when none.
func (h *harness) stored(t testing.TB, k *v3.KindInfo, ns, name string) string {
	t.Helper()
	kv, err := h.be.Get(context.Background(), client.Key(k, ns, name))
	if errors.Is(err, datastore.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(kv.Value)
}

var identity = regexp.MustCompile(`"(uid|creationTimestamp)":"[^"]*"`)

// withoutIdentity blanks uid and creationTimestamp, which differ per run.
func withoutIdentity(v string) string { return identity.ReplaceAllString(v, `"$1":"-"`) }

// reference reads the keys and values of what Calico's kube-controllers
// left in etcd (testdata/shared/reference/kube-controllers-etcd.md).
func reference(t testing.TB) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../testdata/shared/reference/kube-controllers-etcd.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	var key string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "/calico/"):
			key = line
		case key != "" && strings.HasPrefix(line, "{"):
			out[key] = line
			key = ""
		}
	}
	if len(out) == 0 {
		t.Fatal("no keys in the reference")
	}
	return out
}

// finalizeNamespace deletes a namespace for good: without a
// kube-controller-manager a deleted namespace stays Terminating until its
// finalizers are cleared.
func (h *harness) deleteNamespace(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	if err := h.admin.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	ns, err := h.admin.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	ns.Spec.Finalizers = nil
	if _, err := h.admin.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

func (h *harness) createNamespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	_, err := h.admin.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.deleteNamespace(t, name) })
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// testLogWriter writes to the test's log while it runs, and nowhere after.
func testLogWriter(t *testing.T) io.Writer {
	w := &tlog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

type tlog struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tlog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done && testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
