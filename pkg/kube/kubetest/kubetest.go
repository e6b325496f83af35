// Package kubetest gives tests a real Kubernetes API: an embedded etcd and a
// kube-apiserver (package apiserver) in a temp dir, an admin clientset and
// kubectl. It is for tests only.
//
// Without the Kubernetes binaries (scripts/build-kubernetes.sh, run by
// `make deps`) a test that asks for a cluster skips, and fails under CI.
//
// Starting an apiserver costs seconds of CPU and some 300 MiB, so a package
// should share one among its tests where it can:
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		c := kubetest.Shared(t)  // started by the first test that asks
//		ns := c.Namespace(t)     // a namespace of this test's own
//		...
//	}
//
// Use Start for a cluster of the test's own: one it stops, restarts or
// configures (extra users, flags), or whose cluster-scoped objects other
// tests must not see.
package kubetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
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
	"k8s.io/client-go/rest"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/datastore/embedded"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/kube/apiserver"
)

// startTimeout bounds starting etcd and the apiserver.
const startTimeout = 5 * time.Minute

// kubectlTimeout bounds one kubectl run.
const kubectlTimeout = 2 * time.Minute

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	// Server is the kube-apiserver (URL, kubeconfigs, RESTConfig, Restart).
	Server *apiserver.Server
	// Etcd is the embedded etcd the apiserver stores in.
	Etcd *embedded.Server
	// Client is an admin (system:masters) clientset.
	Client kubernetes.Interface
}

// RequireBinaries skips t (fails it under CI) when kube-apiserver or kubectl
// has not been built.
func RequireBinaries(t testing.TB) {
	t.Helper()
	if _, err := apiserver.BinDir(); err != nil {
		testenv.Missing(t, "the Kubernetes binaries: "+err.Error())
	}
}

// Start runs an etcd and a kube-apiserver for t alone, in t.TempDir(), both
// stopped when t ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	return StartWith(t, nil)
}

// StartWith is Start with configure changing the apiserver's Config before
// it starts (Dir and EtcdServers are set already).
func StartWith(t testing.TB, configure func(*apiserver.Config)) *Cluster {
	t.Helper()
	RequireBinaries(t)
	etcd := etcdtest.Start(t)
	cfg := apiserver.Config{Dir: t.TempDir(), EtcdServers: []string{etcd.Endpoint()}}
	if configure != nil {
		configure(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	srv, err := apiserver.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	// Cleanups run last-in first-out: the apiserver stops before its etcd.
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	c, err := newCluster(srv, etcd)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return c
}

func newCluster(srv *apiserver.Server, etcd *embedded.Server) (*Cluster, error) {
	client, err := kubernetes.NewForConfig(srv.RESTConfig())
	if err != nil {
		return nil, err
	}
	return &Cluster{Server: srv, Etcd: etcd, Client: client}, nil
}

// shared is the package's cluster of Shared.
var shared struct {
	sync.Mutex
	main    bool
	cluster *Cluster
	err     error
	dir     string
}

// Main runs the package's tests (TestMain calls it) and then stops the
// cluster that Shared started, if any, and removes its files.
func Main(m *testing.M) {
	shared.Lock()
	shared.main = true
	shared.Unlock()
	code := m.Run()
	stopShared()
	os.Exit(code)
}

// Shared returns the package's one cluster, started by the first test that
// asks for it and stopped by Main after the last test. The package's
// TestMain must call Main. Tests sharing it keep to namespaces of their own
// (Namespace) and must not stop it.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	RequireBinaries(t)
	shared.Lock()
	defer shared.Unlock()
	if !shared.main {
		t.Fatal("kubetest.Shared: the package's TestMain must call kubetest.Main(m), which stops the shared cluster")
	}
	if shared.cluster == nil && shared.err == nil {
		shared.cluster, shared.err = startShared()
		if shared.err != nil {
			shared.err = fmt.Errorf("kubetest: shared cluster: %w", shared.err)
		}
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.cluster
}

func startShared() (*Cluster, error) {
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, err
	}
	shared.dir = dir
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	etcd, err := embedded.Serve(context.Background(), embedded.ServeConfig{DataDir: dir + "/etcd", ListenClientURL: "http://127.0.0.1:0", UnsafeNoFsync: true})
	if err != nil {
		return nil, err
	}
	srv, err := apiserver.Start(ctx, apiserver.Config{Dir: dir + "/apiserver", EtcdServers: []string{etcd.Endpoint()}})
	if err != nil {
		etcd.Close()
		return nil, err
	}
	c, err := newCluster(srv, etcd)
	if err != nil {
		_ = srv.Stop(context.Background())
		etcd.Close()
	}
	return c, err
}

func stopShared() {
	shared.Lock()
	defer shared.Unlock()
	if c := shared.cluster; c != nil {
		_ = c.Server.Stop(context.Background())
		c.Etcd.Close()
		<-c.Etcd.Done()
		shared.cluster = nil
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
}

// KubectlErr runs kubectl as admin and returns its standard output; the
// error carries its standard error.
func (c *Cluster) KubectlErr(args ...string) (string, error) {
	return c.KubectlInputErr(nil, args...)
}

// KubectlInputErr is KubectlErr with stdin as kubectl's standard input.
func (c *Cluster) KubectlInputErr(stdin io.Reader, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
	defer cancel()
	return apiserver.KubectlInput(ctx, c.Server.AdminKubeconfig(), stdin, args...)
}

// Kubectl runs kubectl as admin and returns its standard output; it fails t
// with kubectl's standard error when kubectl fails.
func (c *Cluster) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.KubectlErr(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Apply applies manifest (YAML or JSON, any number of documents) with
// `kubectl apply -f -`, failing t when kubectl fails.
func (c *Cluster) Apply(t testing.TB, manifest string) string {
	t.Helper()
	out, err := c.KubectlInputErr(strings.NewReader(manifest), "apply", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Namespace creates a namespace unique to t (named after the test) and
// deletes it when t ends. Without a kube-controller-manager a deleted
// namespace stays Terminating: the objects in it remain, unseen by other
// tests, which use their own.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	name := UniqueName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = c.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	})
	return name
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// UniqueName is a DNS label (at most 63 characters) made of prefix and a
// random suffix, unique to this run.
func UniqueName(prefix string) string {
	p := strings.Trim(notDNS.ReplaceAllString(strings.ToLower(prefix), "-"), "-")
	if len(p) > 50 {
		p = strings.TrimRight(p[:50], "-")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	if p == "" {
		return "t-" + hex.EncodeToString(b)
	}
	return p + "-" + hex.EncodeToString(b)
}

// ImpersonatingClient is a clientset acting as user in groups (see
// apiserver.Server.ImpersonatingConfig).
func (c *Cluster) ImpersonatingClient(t testing.TB, user string, groups ...string) kubernetes.Interface {
	t.Helper()
	return c.clientFor(t, c.Server.ImpersonatingConfig(user, groups...))
}

// ServiceAccountClient creates ServiceAccount namespace/name (if it is not
// there yet) and returns a clientset with exactly its permissions: how a
// test runs a component under the RBAC its manifests give it.
func (c *Cluster) ServiceAccountClient(t testing.TB, namespace, name string) kubernetes.Interface {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: create ServiceAccount %s/%s: %v", namespace, name, err)
	}
	return c.clientFor(t, c.Server.ServiceAccountConfig(namespace, name))
}

func (c *Cluster) clientFor(t testing.TB, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return cs
}
