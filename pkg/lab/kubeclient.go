package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// kubeClient is the little of the Kubernetes API the lab needs (create,
// get, delete of a few kinds, /readyz), over plain HTTPS with the types of
// k8s.io/api. The lab is linked into the tortie CLI, which starts once per
// command: client-go's clientsets and schemes would cost every command
// their package initialisation for a handful of requests a lab makes.
type kubeClient struct {
	server string // https://host:port
	token  string
	hc     *http.Client
}

// kubeconfigFile is the part of a kubeconfig the lab reads.
type kubeconfigFile struct {
	CurrentContext string `json:"current-context"`
	Clusters       []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server                   string `json:"server"`
			CertificateAuthority     string `json:"certificate-authority"`
			CertificateAuthorityData string `json:"certificate-authority-data"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Token                 string `json:"token"`
			ClientCertificate     string `json:"client-certificate"`
			ClientCertificateData string `json:"client-certificate-data"`
			ClientKey             string `json:"client-key"`
			ClientKeyData         string `json:"client-key-data"`
		} `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
}

// newKubeClient reads a kubeconfig's current context (or its only
// cluster and user): the server, its CA, a token or a client certificate.
func newKubeClient(path string) (*kubeClient, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kc kubeconfigFile
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	clusterName, userName := "", ""
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			clusterName, userName = c.Context.Cluster, c.Context.User
		}
	}
	ci, ui := -1, -1
	for i, c := range kc.Clusters {
		if c.Name == clusterName || (clusterName == "" && len(kc.Clusters) == 1) {
			ci = i
		}
	}
	for i, u := range kc.Users {
		if u.Name == userName || (userName == "" && len(kc.Users) == 1) {
			ui = i
		}
	}
	if ci < 0 || ui < 0 {
		return nil, fmt.Errorf("kubeconfig %s: no cluster and user for context %q", path, kc.CurrentContext)
	}
	cl, us := kc.Clusters[ci].Cluster, kc.Users[ui].User
	pemOf := func(data, file string) ([]byte, error) {
		if data != "" {
			return base64.StdEncoding.DecodeString(data)
		}
		if file != "" {
			return os.ReadFile(file)
		}
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	ca, err := pemOf(cl.CertificateAuthorityData, cl.CertificateAuthority)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: certificate authority: %w", path, err)
	}
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("kubeconfig %s: no certificate in the certificate authority", path)
		}
		tc.RootCAs = pool
	}
	cert, err := pemOf(us.ClientCertificateData, us.ClientCertificate)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: client certificate: %w", path, err)
	}
	key, err := pemOf(us.ClientKeyData, us.ClientKey)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: client key: %w", path, err)
	}
	if len(cert) > 0 {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: client certificate: %w", path, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	if cl.Server == "" {
		return nil, fmt.Errorf("kubeconfig %s: no server", path)
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
	return &kubeClient{server: strings.TrimSuffix(cl.Server, "/"), token: us.Token,
		hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

func (k *kubeClient) close() { k.hc.CloseIdleConnections() }

// kubeError is the API server's answer to a request that failed.
type kubeError struct {
	Method, Path string
	Code         int
	Reason       string // metav1.StatusReason: NotFound, AlreadyExists, ...
	Message      string
}

func (e *kubeError) Error() string {
	return fmt.Sprintf("Kubernetes API %s %s: %d %s: %s", e.Method, e.Path, e.Code, e.Reason, e.Message)
}

func kubeCode(err error) int {
	var ke *kubeError
	if errors.As(err, &ke) {
		return ke.Code
	}
	return 0
}

// do sends in (JSON, if not nil) and decodes the answer into out (if not
// nil); an answer other than 2xx is a *kubeError.
func (k *kubeClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.server+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if k.token != "" {
		req.Header.Set("Authorization", "Bearer "+k.token)
	}
	resp, err := k.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("Kubernetes API %s %s: %w", method, path, interrupted(ctx))
		}
		return fmt.Errorf("Kubernetes API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("Kubernetes API %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		ke := &kubeError{Method: method, Path: path, Code: resp.StatusCode, Message: strings.TrimSpace(string(b))}
		var st struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &st) == nil && st.Message != "" {
			ke.Reason, ke.Message = st.Reason, st.Message
		}
		return ke
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("Kubernetes API %s %s: %w", method, path, err)
		}
	}
	return nil
}

// create POSTs obj to the collection at path; an object that exists
// already is not an error when exist is true.
func (k *kubeClient) create(ctx context.Context, path string, obj any, existOK bool) error {
	err := k.do(ctx, http.MethodPost, path, obj, nil)
	if existOK && kubeCode(err) == http.StatusConflict {
		return nil
	}
	return err
}

// ready asks /readyz once.
func (k *kubeClient) ready(ctx context.Context) error {
	return k.do(ctx, http.MethodGet, "/readyz", nil, nil)
}
