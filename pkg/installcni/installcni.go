// Package installcni installs tortie's CNI plugin on a Kubernetes node, as
// Calico's install-cni does: it runs as the tortie-node DaemonSet's init
// container (tortie-install-cni, in the tortie/cni image) with the host's
// /opt/cni/bin and /etc/cni/net.d mounted, and
//
//   - copies the plugin into the host's CNI binary directory as "tortie"
//     and "tortie-ipam" (each written to a temporary file and renamed over
//     the old one, so a runtime never runs half a binary; other plugins are
//     left alone);
//   - copies the etcd TLS files named by ETCD_CA_CERT_FILE, ETCD_CERT_FILE,
//     ETCD_KEY_FILE (the mounted Secret) to <net dir>/tortie-tls/, where the
//     plugin, which runs on the host, reads them;
//   - writes a kubeconfig for the plugin (<net dir>/tortie-kubeconfig, mode
//     0600): the API server from KUBERNETES_SERVICE_HOST/PORT, the cluster
//     CA and a token from the pod's ServiceAccount; with CNI_SERVICE_ACCOUNT
//     (the manifest: tortie-cni-plugin) the token is that account's,
//     requested with the pod's own token from the TokenRequest API, so that
//     the plugin has only its own account's rights;
//   - writes the network configuration list from a template
//     (CNI_NETWORK_CONFIG, or the file CNI_NETWORK_CONFIG_FILE, else
//     DefaultTemplate) with Calico's placeholders replaced, after checking
//     that the result is a JSON CNI configuration, to <net dir>/CNI_CONF_NAME
//     (10-tortie.conflist).
//
// Every file is written only when its content changes, so a second run
// changes nothing (the runtime watches the directory).
package installcni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Config is the installer's configuration; FromEnv reads it the way
// Calico's install-cni reads its environment.
type Config struct {
	// PluginBinary is the plugin to install (the image's tortie-cni).
	PluginBinary string
	// PluginNames are the names it is installed as.
	PluginNames []string
	// DestBinDir and DestNetDir are the host's CNI directories as mounted
	// in the container; NetDir is the configuration directory as the host
	// (and so the plugin) sees it, for the paths written into the conflist.
	DestBinDir, DestNetDir, NetDir string
	// UpdateBinaries false leaves plugin binaries that exist alone.
	UpdateBinaries bool

	// Template is the conflist template; ConfName its file name.
	Template, ConfName string

	// Values of the placeholders.
	MTU, NodeName, LogLevel, LogFilePath, DatastoreType, EtcdEndpoints string
	LogFileMaxSize, LogFileMaxAge, LogFileMaxCount                     string
	// EtcdCAFile, EtcdCertFile, EtcdKeyFile are the TLS files in the
	// container (the mounted Secret); empty: no such file.
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string

	// Kubernetes: the API server (empty host: not in a cluster, no
	// kubeconfig), the pod's ServiceAccount directory (token, ca.crt,
	// namespace) and the account whose token the plugin gets (empty: the
	// pod's own).
	KubeHost, KubePort, KubeProtocol string
	ServiceAccountDir                string
	CNIServiceAccount                string
	TokenExpirationSeconds           int64
	KubeconfigName                   string

	// Out receives what the installer did (nil: nowhere).
	Out io.Writer
}

// Defaults.
const (
	DefaultConfName          = "10-tortie.conflist"
	DefaultKubeconfigName    = "tortie-kubeconfig"
	DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	DefaultCNIServiceAccount = "tortie-cni-plugin"
	// DefaultTokenExpiration is a year: the init container runs once per
	// pod start, so the token must outlive the pod (a restart of the
	// DaemonSet's pods gives every node a new one).
	DefaultTokenExpiration = 365 * 24 * 3600
	// TLSDir is the directory, under the configuration directory, the etcd
	// TLS files are copied to.
	TLSDir = "tortie-tls"
)

// DefaultTemplate is the conflist written when neither CNI_NETWORK_CONFIG
// nor CNI_NETWORK_CONFIG_FILE is set: tortie's plugin and IPAM, with the
// datastore, node and Kubernetes placeholders.
const DefaultTemplate = `{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "tortie",
      "log_level": "__LOG_LEVEL__",
      "log_file_path": "__LOG_FILE_PATH__",
      "datastore_type": "__DATASTORE_TYPE__",
      "etcd_endpoints": "__ETCD_ENDPOINTS__",
      "etcd_key_file": "__ETCD_KEY_FILE__",
      "etcd_cert_file": "__ETCD_CERT_FILE__",
      "etcd_ca_cert_file": "__ETCD_CA_CERT_FILE__",
      "mtu": __CNI_MTU__,
      "nodename": "__KUBERNETES_NODE_NAME__",
      "ipam": {"type": "tortie-ipam"},
      "policy": {"type": "k8s"},
      "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__", "node_name": "__KUBERNETES_NODE_NAME__"}
    }
  ]
}
`

// FromEnv reads the configuration from the environment (getenv is
// os.Getenv outside tests). self is the installer's own path: the plugin
// is looked for next to it.
func FromEnv(getenv func(string) string, self string) (Config, error) {
	get := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	c := Config{
		PluginBinary:      get("CNI_PLUGIN_BINARY", filepath.Join(filepath.Dir(self), "tortie-cni")),
		PluginNames:       []string{"tortie", "tortie-ipam"},
		DestBinDir:        get("CNI_DEST_BIN_DIR", "/host/opt/cni/bin"),
		DestNetDir:        get("CNI_DEST_NET_DIR", "/host/etc/cni/net.d"),
		NetDir:            get("CNI_NET_DIR", "/etc/cni/net.d"),
		ConfName:          get("CNI_CONF_NAME", DefaultConfName),
		MTU:               get("CNI_MTU", "1500"),
		NodeName:          getenv("KUBERNETES_NODE_NAME"),
		LogLevel:          get("LOG_LEVEL", "info"),
		LogFilePath:       get("LOG_FILE_PATH", "/var/log/tortie/cni.log"),
		LogFileMaxSize:    get("LOG_FILE_MAX_SIZE", "100"),
		LogFileMaxAge:     get("LOG_FILE_MAX_AGE", "30"),
		LogFileMaxCount:   get("LOG_FILE_MAX_COUNT", "10"),
		DatastoreType:     get("DATASTORE_TYPE", "etcdv3"),
		EtcdEndpoints:     getenv("ETCD_ENDPOINTS"),
		EtcdCAFile:        getenv("ETCD_CA_CERT_FILE"),
		EtcdCertFile:      getenv("ETCD_CERT_FILE"),
		EtcdKeyFile:       getenv("ETCD_KEY_FILE"),
		KubeHost:          getenv("KUBERNETES_SERVICE_HOST"),
		KubePort:          get("KUBERNETES_SERVICE_PORT", "443"),
		KubeProtocol:      get("KUBERNETES_SERVICE_PROTOCOL", "https"),
		ServiceAccountDir: get("SERVICEACCOUNT_DIR", DefaultServiceAccountDir),
		CNIServiceAccount: getenv("CNI_SERVICE_ACCOUNT"),
		KubeconfigName:    get("KUBECONFIG_FILENAME", DefaultKubeconfigName),
	}
	var err error
	c.UpdateBinaries, err = parseBool("UPDATE_CNI_BINARIES", get("UPDATE_CNI_BINARIES", "true"))
	if err != nil {
		return Config{}, err
	}
	c.TokenExpirationSeconds, err = strconv.ParseInt(get("CNI_TOKEN_EXPIRATION_SECONDS", strconv.Itoa(DefaultTokenExpiration)), 10, 64)
	if err != nil || c.TokenExpirationSeconds < 600 {
		return Config{}, fmt.Errorf("CNI_TOKEN_EXPIRATION_SECONDS %q: want a number of seconds, at least 600 (the API server's minimum)", getenv("CNI_TOKEN_EXPIRATION_SECONDS"))
	}
	switch f := getenv("CNI_NETWORK_CONFIG_FILE"); {
	case f != "":
		b, err := os.ReadFile(f)
		if err != nil {
			return Config{}, fmt.Errorf("CNI_NETWORK_CONFIG_FILE: %w", err)
		}
		c.Template = string(b)
	case getenv("CNI_NETWORK_CONFIG") != "":
		c.Template = getenv("CNI_NETWORK_CONFIG")
	default:
		c.Template = DefaultTemplate
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return Config{}, fmt.Errorf("KUBERNETES_NODE_NAME not set and no host name: %w", err)
		}
		c.NodeName = strings.ToLower(h)
	}
	return c, nil
}

func parseBool(name, v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s %q: want true or false", name, v)
	}
	return b, nil
}

// Install does the installation; it can run any number of times.
func Install(c Config) error {
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.ConfName == "" || strings.ContainsRune(c.ConfName, '/') {
		return fmt.Errorf("CNI_CONF_NAME %q: want a file name", c.ConfName)
	}
	if !strings.HasSuffix(c.ConfName, ".conflist") && !strings.HasSuffix(c.ConfName, ".conf") {
		return fmt.Errorf("CNI_CONF_NAME %q: the runtime reads only *.conflist, *.conf and *.json; want .conflist (or .conf)", c.ConfName)
	}
	for _, d := range []string{c.DestBinDir, c.DestNetDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	plugin, err := os.ReadFile(c.PluginBinary)
	if err != nil {
		return fmt.Errorf("the plugin: %w", err)
	}
	for _, name := range c.PluginNames {
		dst := filepath.Join(c.DestBinDir, name)
		if _, err := os.Stat(dst); err == nil && !c.UpdateBinaries {
			fmt.Fprintf(c.Out, "%s exists, left alone (UPDATE_CNI_BINARIES=false)\n", dst)
			continue
		}
		if err := writeIfChanged(c.Out, dst, plugin, 0o755); err != nil {
			return err
		}
	}

	vals := map[string]string{
		"__CNI_MTU__":              c.MTU,
		"__KUBERNETES_NODE_NAME__": c.NodeName,
		"__LOG_LEVEL__":            c.LogLevel,
		"__LOG_FILE_PATH__":        c.LogFilePath,
		"__LOG_FILE_MAX_SIZE__":    c.LogFileMaxSize,
		"__LOG_FILE_MAX_AGE__":     c.LogFileMaxAge,
		"__LOG_FILE_MAX_COUNT__":   c.LogFileMaxCount,
		"__DATASTORE_TYPE__":       c.DatastoreType,
		"__ETCD_ENDPOINTS__":       c.EtcdEndpoints,
		"__KUBECONFIG_FILENAME__":  c.KubeconfigName,
		"__CNI_NET_DIR__":          c.NetDir,
	}
	for _, tls := range []struct{ placeholder, src, name string }{
		{"__ETCD_CA_CERT_FILE__", c.EtcdCAFile, "etcd-ca"},
		{"__ETCD_CERT_FILE__", c.EtcdCertFile, "etcd-cert"},
		{"__ETCD_KEY_FILE__", c.EtcdKeyFile, "etcd-key"},
	} {
		vals[tls.placeholder] = ""
		if tls.src == "" {
			continue
		}
		b, err := os.ReadFile(tls.src)
		if err != nil {
			return fmt.Errorf("etcd TLS file (is the Secret tortie-etcd-secrets mounted and does it have this key?): %w", err)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return fmt.Errorf("etcd TLS file %s is empty: fill the Secret tortie-etcd-secrets, or leave the ConfigMap's path empty", tls.src)
		}
		if err := os.MkdirAll(filepath.Join(c.DestNetDir, TLSDir), 0o700); err != nil {
			return err
		}
		if err := writeIfChanged(c.Out, filepath.Join(c.DestNetDir, TLSDir, tls.name), b, 0o600); err != nil {
			return err
		}
		vals[tls.placeholder] = filepath.Join(c.NetDir, TLSDir, tls.name)
	}

	kubeconfigPath := filepath.Join(c.NetDir, c.KubeconfigName)
	vals["__KUBECONFIG_FILEPATH__"] = kubeconfigPath
	vals["__KUBERNETES_SERVICE_HOST__"] = c.KubeHost
	vals["__KUBERNETES_SERVICE_PORT__"] = c.KubePort
	usesKube := false
	for _, p := range []string{"__KUBECONFIG_FILEPATH__", "__KUBECONFIG_FILENAME__", "__SERVICEACCOUNT_TOKEN__"} {
		usesKube = usesKube || strings.Contains(c.Template, p)
	}
	secretConf := strings.Contains(c.Template, "__SERVICEACCOUNT_TOKEN__")
	switch {
	case c.KubeHost != "":
		kc, token, err := c.kubeconfig()
		if err != nil {
			return err
		}
		vals["__SERVICEACCOUNT_TOKEN__"] = token
		if err := writeIfChanged(c.Out, filepath.Join(c.DestNetDir, c.KubeconfigName), kc, 0o600); err != nil {
			return err
		}
	case usesKube:
		return errors.New("the network config template names the kubeconfig or the token, but KUBERNETES_SERVICE_HOST is not set: not running in a pod?")
	}

	conf, err := Render(c.Template, vals)
	if err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if secretConf {
		mode = 0o600
	}
	return writeIfChanged(c.Out, filepath.Join(c.DestNetDir, c.ConfName), conf, mode)
}

var placeholder = regexp.MustCompile(`__[A-Z][A-Z0-9_]*__`)

// Render replaces the placeholders in the template and checks that the
// result is a CNI network configuration: a JSON object with a name and
// either a plugins list (a conflist) or a type. A placeholder left over
// (a __NAME__ the installer does not know) is an error.
func Render(template string, vals map[string]string) ([]byte, error) {
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var pairs []string
	for _, k := range keys {
		pairs = append(pairs, k, vals[k])
	}
	out := strings.NewReplacer(pairs...).Replace(template)
	var conf struct {
		Name    string            `json:"name"`
		Type    string            `json:"type"`
		Plugins []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(out), &conf); err != nil {
		return nil, fmt.Errorf("the network config (CNI_NETWORK_CONFIG with its placeholders replaced) is not JSON: %w\n%s", err, out)
	}
	if conf.Name == "" {
		return nil, fmt.Errorf("the network config has no name:\n%s", out)
	}
	if len(conf.Plugins) == 0 && conf.Type == "" {
		return nil, fmt.Errorf("the network config has neither plugins nor type:\n%s", out)
	}
	if left := placeholder.FindString(out); left != "" {
		return nil, fmt.Errorf("the network config has a placeholder the installer does not know: %s", left)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte(out), "", "  "); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// writeIfChanged writes data to path, through a temporary file in the same
// directory renamed over it, unless the file already has that content and
// mode.
func writeIfChanged(out io.Writer, path string, data []byte, mode os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm() == mode {
			fmt.Fprintf(out, "%s unchanged\n", path)
			return nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s written\n", path)
	return nil
}
