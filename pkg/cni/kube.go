package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// The plugin's Kubernetes API client. Calico's plugin builds a whole
// clientset; this one reads a Pod and a Namespace and patches a Pod's
// status, with plain HTTP requests on client-go's transport (rest.Config:
// TLS, tokens, client certificates, exec credential plugins,
// impersonation), decoding into k8s.io/api/core/v1's types. Linking the
// clientset, or even the typed core/v1 client, would register every API
// group's types in a scheme at the start of every CNI call (over 100 more
// package inits: docs/benchmarks.md).

// kubeClient talks to the Kubernetes API.
type kubeClient struct {
	http    *http.Client
	base    *url.URL // the server, with any path prefix
	source  string   // where the configuration came from, for messages
	timeout time.Duration
}

// kubeConfigured reports whether the network config configures a Kubernetes
// API client: a kubeconfig, an API root, or credentials (Calico's keys).
func (c *NetConf) kubeConfigured() bool {
	key, _ := c.kubeClientKey()
	return key != ""
}

// kubeSource names the keys the client comes from, for messages.
func (c *NetConf) kubeSource() string {
	if c.Kubernetes.Kubeconfig != "" {
		return "kubernetes.kubeconfig " + c.Kubernetes.Kubeconfig
	}
	key, _ := c.kubeClientKey()
	return key
}

// kubeRESTConfig loads the client configuration as Calico's plugin does:
// the kubeconfig file (kubernetes.kubeconfig), its current context, with
// the network config's overrides on top: policy.k8s_api_root (anything
// from "/api/" on dropped, as earlier configs wrote the full path),
// kubernetes.k8s_api_root (wins over it), policy.k8s_auth_token,
// policy.k8s_client_certificate, policy.k8s_client_key and
// policy.k8s_certificate_authority.
func (c *NetConf) kubeRESTConfig() (*rest.Config, error) {
	k, p := c.Kubernetes, c.Policy
	over := &clientcmd.ConfigOverrides{}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&over.ClusterInfo.Server, strings.Split(p.K8sAPIRoot, "/api/")[0])
	set(&over.ClusterInfo.Server, k.K8sAPIRoot)
	set(&over.ClusterInfo.CertificateAuthority, p.K8sCertificateAuthority)
	set(&over.AuthInfo.Token, p.K8sAuthToken)
	set(&over.AuthInfo.ClientCertificate, p.K8sClientCertificate)
	set(&over.AuthInfo.ClientKey, p.K8sClientKey)
	loader := &clientcmd.ClientConfigLoadingRules{ExplicitPath: k.Kubeconfig}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loader, over).ClientConfig()
}

// newKubeClient builds the client; nothing is sent yet.
func newKubeClient(conf *NetConf) (*kubeClient, error) {
	source := conf.kubeSource()
	cfg, err := conf.kubeRESTConfig()
	if err != nil {
		return nil, newError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("cannot load the Kubernetes client configuration (%s)", source), err)
	}
	cfg.Timeout = conf.datastoreTimeout()
	cfg.UserAgent = "tortie-cni/" + Version
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, newError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("the Kubernetes API server address %q (%s) is not usable", cfg.Host, source), err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, newError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("cannot set up the Kubernetes API client (%s): its TLS or credentials", source), err)
	}
	return &kubeClient{http: hc, base: base, source: source, timeout: cfg.Timeout}, nil
}

// kubeAPIError is a request the API server answered with an error status.
type kubeAPIError struct {
	code    int
	reason  metav1.StatusReason
	message string
}

func (e *kubeAPIError) Error() string {
	if e.message != "" {
		return fmt.Sprintf("%s (HTTP %d)", e.message, e.code)
	}
	return fmt.Sprintf("HTTP %d %s", e.code, e.reason)
}

func isKubeStatus(err error, code int) bool {
	var ke *kubeAPIError
	return errors.As(err, &ke) && ke.code == code
}

// do sends one request; out, if not nil, receives the decoded answer.
func (k *kubeClient) do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	u := *k.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ke := &kubeAPIError{code: resp.StatusCode}
		var st metav1.Status
		if json.Unmarshal(b, &st) == nil && st.Kind == "Status" {
			ke.reason, ke.message = st.Reason, st.Message
		} else {
			ke.message = strings.TrimSpace(string(b))
			if len(ke.message) > 200 {
				ke.message = ke.message[:200] + "…"
			}
		}
		return ke
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the API server's answer is not the expected JSON: %w", err)
	}
	return nil
}

func podPath(namespace, name string) string {
	return "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods/" + url.PathEscape(name)
}

func (k *kubeClient) getPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	return pod, k.do(ctx, http.MethodGet, podPath(namespace, name), "", nil, pod)
}

func (k *kubeClient) getNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns := &corev1.Namespace{}
	return ns, k.do(ctx, http.MethodGet, "/api/v1/namespaces/"+url.PathEscape(name), "", nil, ns)
}

// patchPodAnnotations sets the pod's annotations through its status
// subresource, as Calico does (its RBAC grants patch on pods/status, not on
// pods): a strategic merge patch of metadata.annotations, with the pod's
// UID as a precondition when uid is set, so that a pod recreated under the
// same name is never touched.
func (k *kubeClient) patchPodAnnotations(ctx context.Context, namespace, name, uid string, annotations map[string]string) error {
	meta := map[string]any{"annotations": annotations}
	if uid != "" {
		meta["uid"] = uid
	}
	body, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	return k.do(ctx, http.MethodPatch, podPath(namespace, name)+"/status", "application/strategic-merge-patch+json", body, nil)
}

// version asks the server's /version (allowed to every user): STATUS.
func (k *kubeClient) version(ctx context.Context) error {
	return k.do(ctx, http.MethodGet, "/version", "", nil, nil)
}

// kubeError turns a failed request into the CNI error an operator can act
// on: the server did not answer (code 11, retry), it refused (code 107,
// with its message, e.g. RBAC's), or the object does not exist.
func (p *invocation) kubeError(what string, err error) *types.Error {
	var ke *kubeAPIError
	if errors.As(err, &ke) {
		switch {
		case ke.code == http.StatusUnauthorized || ke.code == http.StatusForbidden:
			return newError(CodeKubernetes,
				fmt.Sprintf("%s: the Kubernetes API refused the plugin's credentials (%s): %s; the plugin's identity needs get on pods and namespaces and patch on pods/status",
					what, p.kube.source, ke.message), nil)
		case ke.code == http.StatusTooManyRequests || ke.code >= 500:
			return newError(types.ErrTryAgainLater, fmt.Sprintf("%s: the Kubernetes API server is not ready: %s", what, ke), nil)
		}
		return newError(CodeKubernetes, fmt.Sprintf("%s: %s", what, ke.message), ke)
	}
	return newError(types.ErrTryAgainLater,
		fmt.Sprintf("%s: the Kubernetes API server (%s, from %s) could not be reached (or did not answer within %s); check that it is running and reachable from this host",
			what, p.kube.base.Redacted(), p.kube.source, p.kube.timeout), err)
}
