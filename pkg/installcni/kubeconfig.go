package installcni

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// kubeconfig is the plugin's kubeconfig and the token in it.
func (c Config) kubeconfig() ([]byte, string, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(c.ServiceAccountDir, name))
		if err != nil {
			return nil, fmt.Errorf("the pod's ServiceAccount (automountServiceAccountToken): %w", err)
		}
		return b, nil
	}
	ca, err := read("ca.crt")
	if err != nil {
		return nil, "", err
	}
	podToken, err := read("token")
	if err != nil {
		return nil, "", err
	}
	server := c.KubeProtocol + "://" + net.JoinHostPort(c.KubeHost, c.KubePort)
	token := strings.TrimSpace(string(podToken))
	if c.CNIServiceAccount != "" {
		ns, err := read("namespace")
		if err != nil {
			return nil, "", err
		}
		token, err = requestToken(server, ca, token, strings.TrimSpace(string(ns)), c.CNIServiceAccount, c.TokenExpirationSeconds)
		if err != nil {
			return nil, "", err
		}
	}
	type cluster struct {
		Server                   string `json:"server"`
		CertificateAuthorityData string `json:"certificate-authority-data"`
	}
	type user struct {
		Token string `json:"token"`
	}
	type kcContext struct {
		Cluster string `json:"cluster"`
		User    string `json:"user"`
	}
	kc := map[string]any{
		"apiVersion":      "v1",
		"kind":            "Config",
		"clusters":        []any{map[string]any{"name": "local", "cluster": cluster{server, base64.StdEncoding.EncodeToString(ca)}}},
		"users":           []any{map[string]any{"name": "tortie-cni", "user": user{token}}},
		"contexts":        []any{map[string]any{"name": "tortie-cni", "context": kcContext{"local", "tortie-cni"}}},
		"current-context": "tortie-cni",
	}
	b, err := yaml.Marshal(kc)
	if err != nil {
		return nil, "", err
	}
	return append([]byte("# Written by tortie-install-cni for the tortie CNI plugin: do not edit.\n"), b...), token, nil
}

// requestToken asks the API server for a token of the ServiceAccount
// ns/name (TokenRequest: POST .../serviceaccounts/<name>/token), with the
// pod's own token, which needs create on serviceaccounts/token for that
// name.
func requestToken(server string, ca []byte, podToken, ns, name string, expiration int64) (string, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return "", fmt.Errorf("the ServiceAccount's ca.crt has no PEM certificate")
	}
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	body, err := json.Marshal(authv1.TokenRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"},
		Spec:     authv1.TokenRequestSpec{ExpirationSeconds: &expiration},
	})
	if err != nil {
		return "", err
	}
	url := fmt.Sprintf("%s/api/v1/namespaces/%s/serviceaccounts/%s/token", server, ns, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+podToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", ns, name, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("requesting a token for ServiceAccount %s/%s: %s: %s (does the pod's ServiceAccount have create on serviceaccounts/token for %s?)", ns, name, resp.Status, strings.TrimSpace(string(rb)), name)
	}
	var tr authv1.TokenRequest
	if err := json.Unmarshal(rb, &tr); err != nil {
		return "", fmt.Errorf("the TokenRequest answer: %w", err)
	}
	if tr.Status.Token == "" {
		return "", fmt.Errorf("the TokenRequest for %s/%s answered no token", ns, name)
	}
	return tr.Status.Token, nil
}
