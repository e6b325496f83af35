package apiserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Version is the Kubernetes release tortie is tested against, the default
// of scripts/build-kubernetes.sh (a test keeps the two equal).
const Version = "v1.37.2"

// AdminUser is the user of the admin token, in group system:masters.
const AdminUser = "tortie-admin"

// Defaults.
const (
	DefaultEtcdPrefix   = "/registry"
	DefaultBindAddress  = "127.0.0.1"
	DefaultServiceCIDR  = "10.96.0.0/16"
	DefaultReadyTimeout = 3 * time.Minute
	// DefaultStopGrace is how long Stop waits after SIGTERM before SIGKILL:
	// an apiserver whose etcd is gone never finishes a graceful shutdown.
	DefaultStopGrace = 15 * time.Second
)

// Config says how to run one kube-apiserver.
type Config struct {
	// Dir holds the PKI, token file, kubeconfigs and log; required. What a
	// previous server left there is reused.
	Dir string
	// EtcdServers are the etcd client URLs (--etcd-servers); required.
	EtcdServers []string
	// EtcdPrefix is the key prefix of every object (default "/registry").
	EtcdPrefix string
	// BindAddress is the address the secure port listens on (default
	// 127.0.0.1; 0.0.0.0 to be reachable from network namespaces).
	BindAddress string
	// Port is the secure port; 0 picks a free one (kept across Restart).
	Port int
	// AdvertiseAddress is the address published as the kubernetes
	// Service's endpoint and put in the serving certificate (default
	// BindAddress; required when BindAddress is unspecified). A loopback
	// address publishes no endpoint (--endpoint-reconciler-type=none):
	// Kubernetes refuses one, and only this machine could reach it.
	AdvertiseAddress string
	// ServiceCIDR is --service-cluster-ip-range (default 10.96.0.0/16; two
	// CIDRs separated by a comma for dual stack). The first address of
	// each is in the serving certificate.
	ServiceCIDR string
	// Binary is the kube-apiserver to run (default BinDir()/kube-apiserver).
	Binary string
	// Users get static tokens besides the admin.
	Users []User
	// Log, if set, also receives the server's output (which always goes to
	// Dir/kube-apiserver.log). Not allowed with Detach.
	Log io.Writer
	// Detach runs the server in a session of its own that outlives this
	// process (the lab); otherwise it is killed if this process dies.
	Detach bool
	// ReadyTimeout bounds the wait for /readyz (default 3 minutes).
	ReadyTimeout time.Duration
	// StopGrace is the wait between SIGTERM and SIGKILL (default 15 s).
	StopGrace time.Duration
	// ExtraArgs are appended to the command line ("--flag=value").
	ExtraArgs []string
}

// User is a user with a static token.
type User struct {
	// Name is the user name, e.g. "system:node:h1" or "alice".
	Name string
	// Groups the user is in (system:authenticated is added by the server).
	Groups []string
	// Token is the bearer token; empty generates one (kept in Dir).
	Token string
}

// Defaults fills in what is not set.
func (c *Config) Defaults() {
	if c.EtcdPrefix == "" {
		c.EtcdPrefix = DefaultEtcdPrefix
	}
	if c.BindAddress == "" {
		c.BindAddress = DefaultBindAddress
	}
	if c.AdvertiseAddress == "" {
		if ip := net.ParseIP(c.BindAddress); ip != nil && !ip.IsUnspecified() {
			c.AdvertiseAddress = c.BindAddress
		}
	}
	if c.ServiceCIDR == "" {
		c.ServiceCIDR = DefaultServiceCIDR
	}
	if c.Binary == "" {
		c.Binary = filepath.Join(binDirPath(), "kube-apiserver")
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
}

// Validate checks a defaulted Config.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Dir == "" {
		bad("Dir: required")
	}
	if len(c.EtcdServers) == 0 {
		bad("EtcdServers: required")
	}
	for i, s := range c.EtcdServers {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("EtcdServers[%d]: %q is not an http(s) URL", i, s)
		}
		if strings.Contains(s, ",") {
			bad("EtcdServers[%d]: %q holds a comma", i, s)
		}
	}
	if !strings.HasPrefix(c.EtcdPrefix, "/") {
		bad("EtcdPrefix: %q does not start with /", c.EtcdPrefix)
	}
	bind := net.ParseIP(c.BindAddress)
	if bind == nil {
		bad("BindAddress: %q is not an IP address", c.BindAddress)
	}
	if c.Port < 0 || c.Port > 65535 {
		bad("Port: %d out of range", c.Port)
	}
	switch adv := net.ParseIP(c.AdvertiseAddress); {
	case c.AdvertiseAddress == "" && bind != nil && bind.IsUnspecified():
		bad("AdvertiseAddress: required when BindAddress is %s", c.BindAddress)
	case adv == nil:
		bad("AdvertiseAddress: %q is not an IP address", c.AdvertiseAddress)
	case adv.IsUnspecified():
		bad("AdvertiseAddress: %s is unspecified", c.AdvertiseAddress)
	}
	if _, err := serviceIPs(c.ServiceCIDR); err != nil {
		bad("ServiceCIDR: %v", err)
	}
	if c.Binary == "" {
		bad("Binary: required")
	}
	seen := map[string]bool{AdminUser: true}
	for i, u := range c.Users {
		if u.Name == "" {
			bad("Users[%d].Name: required", i)
		} else if seen[u.Name] {
			bad("Users[%d].Name: %q given twice (or the admin's)", i, u.Name)
		}
		seen[u.Name] = true
		for _, f := range append([]string{u.Name, u.Token}, u.Groups...) {
			if strings.ContainsAny(f, ",\"\n\r") {
				bad("Users[%d]: %q: a name, group or token may not hold a comma, quote or newline", i, f)
			}
		}
		if strings.ContainsAny(u.Name, "/") {
			bad("Users[%d].Name: %q holds a slash", i, u.Name)
		}
	}
	if c.Detach && c.Log != nil {
		bad("Log: not allowed with Detach (the server outlives this process; read Dir/kube-apiserver.log)")
	}
	if c.ReadyTimeout < 0 || c.StopGrace < 0 {
		bad("ReadyTimeout, StopGrace: negative")
	}
	return errors.Join(errs...)
}

// serviceIPs returns the first address of each CIDR in a comma-separated
// list of one or two (the kubernetes Service's ClusterIP).
func serviceIPs(cidrs string) ([]netip.Addr, error) {
	parts := strings.Split(cidrs, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%q: at most two CIDRs", cidrs)
	}
	var ips []netip.Addr
	for _, p := range parts {
		pfx, err := netip.ParsePrefix(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		if pfx != pfx.Masked() {
			return nil, fmt.Errorf("%s: host bits set", pfx)
		}
		first := pfx.Addr().Next()
		if !pfx.Contains(first) || !first.IsValid() {
			return nil, fmt.Errorf("%s: too small", pfx)
		}
		ips = append(ips, first)
	}
	return ips, nil
}

// binDirPath is where the binaries are expected, without checking.
func binDirPath() string {
	if d := os.Getenv("TORTIE_KUBERNETES_BIN"); d != "" {
		return d
	}
	cache := os.Getenv("TORTIE_CACHE")
	if cache == "" {
		cache = "/var/cache/tortie"
	}
	return filepath.Join(cache, "kubernetes", Version, "bin")
}

// BinDir returns the directory holding kube-apiserver and kubectl:
// $TORTIE_KUBERNETES_BIN if set, else the cache scripts/build-kubernetes.sh
// fills (${TORTIE_CACHE:-/var/cache/tortie}/kubernetes/<Version>/bin). It
// fails, naming the script to run, when either binary is missing there.
func BinDir() (string, error) {
	d := binDirPath()
	for _, b := range []string{"kube-apiserver", "kubectl"} {
		if _, err := Binary(b); err != nil {
			return d, err
		}
	}
	return d, nil
}

// Binary returns the path of one Kubernetes binary (kube-apiserver,
// kubectl, ...) in BinDir, or an error naming the script that builds it.
func Binary(name string) (string, error) {
	d := binDirPath()
	p := filepath.Join(d, name)
	st, err := os.Stat(p)
	if err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		// The build script stamps a finished binary; a TORTIE_KUBERNETES_BIN
		// of one's own needs no stamp.
		if os.Getenv("TORTIE_KUBERNETES_BIN") != "" {
			return p, nil
		}
		if _, err := os.Stat(filepath.Join(d, "."+name+".done")); err == nil {
			return p, nil
		}
	}
	return p, &MissingBinaryError{Name: name, Path: p}
}

// MissingBinaryError says a Kubernetes binary has not been built.
type MissingBinaryError struct {
	Name, Path string
}

func (e *MissingBinaryError) Error() string {
	if os.Getenv("TORTIE_KUBERNETES_BIN") != "" {
		return fmt.Sprintf("%s: not found (TORTIE_KUBERNETES_BIN is set; unset it to use the cache, or put Kubernetes %s binaries there)", e.Path, Version)
	}
	return fmt.Sprintf("%s: not built; run scripts/build-kubernetes.sh %s (or make deps), which builds Kubernetes %s from source into the cache (cold: 20-40 minutes)", e.Path, e.Name, Version)
}
