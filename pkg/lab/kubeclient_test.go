package lab

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tortie/tortie/pkg/kube/apiserver"
)

// TestKubeClient: the lab's Kubernetes client reads a kubeconfig as the
// apiserver package writes it, trusts its CA, sends its token, and reads
// the server's Status on failure.
func TestKubeClient(t *testing.T) {
	var got []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+" "+string(body))
		switch {
		case r.URL.Path == "/readyz":
			w.Write([]byte("ok"))
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/namespaces"):
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"kind":"Status","reason":"AlreadyExists","message":"namespaces \"a\" already exists"}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"kind":"Status","reason":"NotFound","message":"pods \"x\" not found"}`))
		}
	}))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	kcText, err := apiserver.KubeconfigYAML(srv.URL, ca, "tortie-admin", "secret-token")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kcText, 0o600); err != nil {
		t.Fatal(err)
	}
	kc, err := newKubeClient(path)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.close()
	ctx := context.Background()
	if err := kc.ready(ctx); err != nil {
		t.Fatalf("ready: %v", err)
	}
	ns := &corev1.Namespace{}
	ns.Name = "a"
	if err := kc.create(ctx, "/api/v1/namespaces", ns, true); err != nil {
		t.Errorf("create of an existing namespace with existOK: %v", err)
	}
	if err := kc.create(ctx, "/api/v1/namespaces", ns, false); kubeCode(err) != http.StatusConflict {
		t.Errorf("create of an existing namespace: %v, want a 409", err)
	}
	err = kc.do(ctx, http.MethodGet, "/api/v1/namespaces/a/pods/x", nil, nil)
	if kubeCode(err) != http.StatusNotFound || !strings.Contains(err.Error(), `pods "x" not found`) {
		t.Errorf("get of a missing pod: %v, want 404 with the server's message", err)
	}
	for _, g := range got {
		if !strings.Contains(g, " Bearer secret-token ") {
			t.Errorf("request without the kubeconfig's token: %s", g)
		}
	}
	if !strings.Contains(got[1], `"name":"a"`) {
		t.Errorf("create sent %s", got[1])
	}
}

// TestWorkloadPod: a workload's pod is bound to its node, carries its
// labels, and names each --listen port as Kubernetes' network policy tests
// name theirs, within the 15 characters of a port name.
func TestWorkloadPod(t *testing.T) {
	w := &Workload{Name: "web", Namespace: "shop", Labels: map[string]string{"app": "web"}, Listen: []string{"tcp:80", "udp:65535"}}
	p := workloadPod(w, "lab-h1")
	if p.Spec.NodeName != "lab-h1" || p.Namespace != "shop" || p.Name != "web" || p.Labels["app"] != "web" {
		t.Errorf("pod %+v", p.ObjectMeta)
	}
	if len(p.Spec.Containers) != 1 {
		t.Fatalf("containers: %d", len(p.Spec.Containers))
	}
	ports := p.Spec.Containers[0].Ports
	b, _ := json.Marshal(ports)
	want := `[{"name":"serve-80-tcp","containerPort":80,"protocol":"TCP"},{"name":"serve-65535-udp","containerPort":65535,"protocol":"UDP"}]`
	if string(b) != want {
		t.Errorf("ports %s, want %s", b, want)
	}
	// IANA_SVC_NAME, as the API server validates it.
	svc := regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$`)
	for _, port := range ports {
		if !svc.MatchString(port.Name) || strings.Contains(port.Name, "--") {
			t.Errorf("port name %q is not a valid port name", port.Name)
		}
	}
}
