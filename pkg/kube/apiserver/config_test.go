package apiserver

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	t.Setenv("TORTIE_KUBERNETES_BIN", "/opt/k8s")
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{"empty", Config{}, Config{EtcdPrefix: "/registry", BindAddress: "127.0.0.1", AdvertiseAddress: "127.0.0.1",
			ServiceCIDR: "10.96.0.0/16", Binary: "/opt/k8s/kube-apiserver", ReadyTimeout: DefaultReadyTimeout, StopGrace: DefaultStopGrace}},
		{"all addresses: no advertise address guessed", Config{BindAddress: "0.0.0.0"}, Config{EtcdPrefix: "/registry", BindAddress: "0.0.0.0",
			ServiceCIDR: "10.96.0.0/16", Binary: "/opt/k8s/kube-apiserver", ReadyTimeout: DefaultReadyTimeout, StopGrace: DefaultStopGrace}},
		{"set fields kept", Config{BindAddress: "0.0.0.0", AdvertiseAddress: "10.250.0.1", EtcdPrefix: "/k", ServiceCIDR: "10.0.0.0/24", Binary: "/b"},
			Config{EtcdPrefix: "/k", BindAddress: "0.0.0.0", AdvertiseAddress: "10.250.0.1",
				ServiceCIDR: "10.0.0.0/24", Binary: "/b", ReadyTimeout: DefaultReadyTimeout, StopGrace: DefaultStopGrace}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in
			got.Defaults()
			if got.EtcdPrefix != tt.want.EtcdPrefix || got.BindAddress != tt.want.BindAddress || got.AdvertiseAddress != tt.want.AdvertiseAddress ||
				got.ServiceCIDR != tt.want.ServiceCIDR || got.Binary != tt.want.Binary || got.ReadyTimeout != tt.want.ReadyTimeout || got.StopGrace != tt.want.StopGrace {
				t.Errorf("Defaults:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid := func() Config {
		c := Config{Dir: "/tmp/x", EtcdServers: []string{"http://127.0.0.1:2379"}}
		c.Defaults()
		return c
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string // "" for valid
	}{
		{"valid", func(*Config) {}, ""},
		{"lab: all addresses, advertised on a bridge", func(c *Config) { c.BindAddress, c.AdvertiseAddress = "0.0.0.0", "10.250.0.1" }, ""},
		{"dual stack", func(c *Config) { c.ServiceCIDR = "10.96.0.0/16,fd00:96::/108" }, ""},
		{"users", func(c *Config) {
			c.Users = []User{{Name: "system:node:h1", Groups: []string{"system:nodes"}}, {Name: "bob", Token: "t"}}
		}, ""},
		{"no dir", func(c *Config) { c.Dir = "" }, "Dir: required"},
		{"no etcd", func(c *Config) { c.EtcdServers = nil }, "EtcdServers: required"},
		{"etcd not a URL", func(c *Config) { c.EtcdServers = []string{"127.0.0.1:2379"} }, "not an http(s) URL"},
		{"prefix", func(c *Config) { c.EtcdPrefix = "registry" }, "does not start with /"},
		{"bind", func(c *Config) { c.BindAddress = "localhost" }, "BindAddress"},
		{"port", func(c *Config) { c.Port = 70000 }, "Port: 70000 out of range"},
		{"all addresses without advertise", func(c *Config) { c.BindAddress, c.AdvertiseAddress = "0.0.0.0", "" }, "AdvertiseAddress: required"},
		{"advertise unspecified", func(c *Config) { c.AdvertiseAddress = "0.0.0.0" }, "unspecified"},
		{"cidr", func(c *Config) { c.ServiceCIDR = "10.96.0.1/16" }, "host bits"},
		{"cidr too small", func(c *Config) { c.ServiceCIDR = "10.96.0.1/32" }, "too small"},
		{"three cidrs", func(c *Config) { c.ServiceCIDR = "10.0.0.0/8,10.1.0.0/16,fd00::/64" }, "at most two"},
		{"user without name", func(c *Config) { c.Users = []User{{}} }, "Users[0].Name: required"},
		{"user twice", func(c *Config) { c.Users = []User{{Name: "a"}, {Name: "a"}} }, "given twice"},
		{"the admin", func(c *Config) { c.Users = []User{{Name: AdminUser}} }, "given twice"},
		{"comma in group", func(c *Config) { c.Users = []User{{Name: "a", Groups: []string{"x,y"}}} }, "may not hold a comma"},
		{"slash in name", func(c *Config) { c.Users = []User{{Name: "a/b"}} }, "slash"},
		{"detached with a log writer", func(c *Config) { c.Detach, c.Log = true, os.Stderr }, "not allowed with Detach"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestServiceIPs(t *testing.T) {
	tests := []struct{ cidrs, want string }{
		{"10.96.0.0/16", "10.96.0.1"},
		{"10.0.0.0/24,fd00:10:96::/112", "10.0.0.1 fd00:10:96::1"},
		{"fd00::/64", "fd00::1"},
	}
	for _, tt := range tests {
		ips, err := serviceIPs(tt.cidrs)
		if err != nil {
			t.Fatalf("%s: %v", tt.cidrs, err)
		}
		var got []string
		for _, ip := range ips {
			got = append(got, ip.String())
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("serviceIPs(%s) = %v, want %s", tt.cidrs, got, tt.want)
		}
	}
}

func TestBinDir(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("TORTIE_KUBERNETES_BIN", "")
	t.Setenv("TORTIE_CACHE", cache)
	want := filepath.Join(cache, "kubernetes", Version, "bin")
	d, err := BinDir()
	var missing *MissingBinaryError
	if d != want || !errors.As(err, &missing) || !strings.Contains(err.Error(), "scripts/build-kubernetes.sh kube-apiserver") {
		t.Fatalf("BinDir with an empty cache: %q, %v; want %s and an error naming the script", d, err, want)
	}
	// A binary is there only once the build script has stamped it.
	if err := os.MkdirAll(want, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"kube-apiserver", "kubectl"} {
		if err := os.WriteFile(filepath.Join(want, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := BinDir(); err == nil {
		t.Fatal("BinDir: binaries without the build script's stamps taken as built")
	}
	for _, b := range []string{"kube-apiserver", "kubectl"} {
		if err := os.WriteFile(filepath.Join(want, "."+b+".done"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := BinDir(); d != want || err != nil {
		t.Fatalf("BinDir: %q, %v", d, err)
	}
	// TORTIE_KUBERNETES_BIN wins, stamps or not.
	own := t.TempDir()
	t.Setenv("TORTIE_KUBERNETES_BIN", own)
	if _, err := BinDir(); err == nil || !strings.Contains(err.Error(), "TORTIE_KUBERNETES_BIN") {
		t.Fatalf("BinDir with an empty TORTIE_KUBERNETES_BIN: %v", err)
	}
	if err := os.WriteFile(filepath.Join(own, "kubectl"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p, err := Binary("kubectl"); p != filepath.Join(own, "kubectl") || err != nil {
		t.Fatalf("Binary(kubectl): %q, %v", p, err)
	}
}

// TestVersionMatchesBuildScript: the version the Go code looks for is the
// one scripts/build-kubernetes.sh builds by default.
func TestVersionMatchesBuildScript(t *testing.T) {
	b, err := os.ReadFile("../../../scripts/build-kubernetes.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`KUBERNETES_VERSION:-(v[0-9.]+)\}`).FindSubmatch(b)
	if m == nil {
		t.Fatal("scripts/build-kubernetes.sh: no KUBERNETES_VERSION default found")
	}
	if string(m[1]) != Version {
		t.Fatalf("scripts/build-kubernetes.sh builds %s by default, Version is %s: change both", m[1], Version)
	}
}
