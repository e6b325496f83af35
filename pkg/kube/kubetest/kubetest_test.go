package kubetest_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/kube/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func TestSharedClusterNamespaceAndKubectl(t *testing.T) {
	c := kubetest.Shared(t)
	if again := kubetest.Shared(t); again != c {
		t.Fatal("Shared started a second cluster")
	}
	ns := c.Namespace(t)
	if !strings.HasPrefix(ns, "testsharedclusternamespaceandkubectl-") {
		t.Errorf("namespace %q not named after the test", ns)
	}
	ctx := context.Background()
	if _, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Apply(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: "+ns+"}\ndata: {k: v}\n")
	cm, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, "cm", metav1.GetOptions{})
	if err != nil || cm.Data["k"] != "v" {
		t.Fatalf("ConfigMap applied with kubectl: %v, %v", cm, err)
	}
	if got := c.Kubectl(t, "get", "configmap", "cm", "-n", ns, "-o", "jsonpath={.data.k}"); got != "v" {
		t.Errorf("kubectl get: %q", got)
	}
	_, err = c.KubectlErr("get", "configmap", "nope", "-n", ns)
	var kerr *apiserver.KubectlError
	if !errors.As(err, &kerr) || !strings.Contains(kerr.Stderr, `"nope" not found`) {
		t.Errorf("kubectl get of a missing object: %v", err)
	}
}

// TestImpersonationEnforcesRBAC: a ServiceAccount without bindings may not
// list pods; a ClusterRole and binding granting it make it may, and no more.
func TestImpersonationEnforcesRBAC(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	ctx := context.Background()
	agent := c.ServiceAccountClient(t, ns, "agent")
	listPods := func() error {
		_, err := agent.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err
	}
	if err := listPods(); !apierrors.IsForbidden(err) {
		t.Fatalf("list pods before any binding: %v, want 403 Forbidden", err)
	}
	name := kubetest.UniqueName("pod-lister")
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}},
	}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "agent"}},
	}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The authorizer sees the binding through an informer: a moment.
	deadline := time.Now().Add(30 * time.Second)
	for err := listPods(); err != nil; err = listPods() {
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("list pods after the binding: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"get pod", func() error { _, err := agent.CoreV1().Pods(ns).Get(ctx, "x", metav1.GetOptions{}); return err }},
		{"list secrets", func() error { _, err := agent.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); return err }},
		{"create pod", func() error {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
			_, err := agent.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
			return err
		}},
	}
	for _, tt := range tests {
		if err := tt.call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s, not granted: %v, want 403 Forbidden", tt.name, err)
		}
	}
	// The account's identity is what its tokens would carry.
	review, err := agent.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u := review.Status.UserInfo; u.Username != "system:serviceaccount:"+ns+":agent" || !strings.Contains(strings.Join(u.Groups, ","), "system:serviceaccounts:"+ns) {
		t.Errorf("whoami: %+v", u)
	}
}

// TestStartOwnCluster: a cluster of the test's own, restarted keeping its
// data, and gone when the test ends.
func TestStartOwnCluster(t *testing.T) {
	var pid int
	t.Run("own", func(t *testing.T) {
		c := kubetest.StartWith(t, func(cfg *apiserver.Config) {
			cfg.Users = []apiserver.User{{Name: "alice"}}
		})
		pid = c.Server.PID()
		ctx := context.Background()
		if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kept"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := c.Server.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
			t.Fatalf("after Restart: %v", err)
		}
		kc, err := c.Server.Kubeconfig("alice")
		if err != nil {
			t.Fatal(err)
		}
		out, err := apiserver.Kubectl(ctx, kc, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		if err != nil || out != "alice" {
			t.Fatalf("kubectl as alice: %q, %v", out, err)
		}
		pid = c.Server.PID()
	})
	if pid == 0 {
		t.Fatal("no server ran")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kube-apiserver %d still there after its test ended (kill 0: %v)", pid, err)
	}
}
