package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGetCustomColumns: -o custom-columns takes the kind's own headings,
// as calicoctl does, and HEADING:.json.path columns, as kubectl does.
func TestGetCustomColumns(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", "testdata/get-fixtures.yaml")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "ippools", "-o", "custom-columns=NAT,NAME,CIDR"},
			"NAT     NAME     CIDR           \ntrue    pool-a   10.10.0.0/16   \nfalse   pool-b   fd00:10::/64   \n\n"},
		{[]string{"get", "ippools", "-o", "custom-columns=NAME:.metadata.name,BLOCK:.spec.blockSize,USES:.spec.allowedUses,FIRST:.spec.allowedUses[0],NONE:.spec.nope"},
			"NAME     BLOCK   USES              FIRST      NONE     \npool-a   26      Workload,Tunnel   Workload   <none>   \npool-b   122     Workload,Tunnel   Workload   <none>   \n\n"},
		{[]string{"get", "wep", "-A", "-o", "custom-columns=NAMESPACE,WORKLOAD,APP:.metadata.labels.app"},
			"NAMESPACE   WORKLOAD     APP      \nprod        frontend-1   web      \nprod        web-vm       <none>   \n\n"},
	} {
		if got := e.mustRun(tt.args...); got != tt.want {
			t.Errorf("tortie %s:\n%s\nwant:\n%s", strings.Join(tt.args, " "), got, tt.want)
		}
	}
	for _, tt := range []struct {
		output, want string
	}{
		{"custom-columns=", "need to specify at least one column"},
		{"custom-columns=NAME,BOGUS", "Unknown heading BOGUS, valid values are: ASSIGNMENTMODE, CIDR, DISABLEBGPEXPORT"},
		{"custom-columns=X:metadata.name", `custom column "X:metadata.name": want HEADING:.json.path`},
		{"go-template=", "need to specify a template"},
		{"go-template={{.Nope", "go-template: template: get:1: unclosed action"},
		{"go-template-file=", "need to specify a template file"},
		{"table", `unrecognized output format "table"`},
	} {
		_, err := e.run("", "get", "ippools", "-o", tt.output)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("-o %s: %v, want %q", tt.output, err, tt.want)
		}
	}
}

// TestGetGoTemplate: go-templates run as calicoctl runs them: on the list
// of results, a listing being one <Kind>List, with Go field names and
// calicoctl's join, joinAndTruncate and config.
func TestGetGoTemplate(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", "testdata/get-fixtures.yaml")
	file := filepath.Join(t.TempDir(), "t.tmpl")
	if err := os.WriteFile(file, []byte(`{{range .}}{{.Kind}} {{.ListMeta.ResourceVersion | printf "%.0s"}}{{range .Items}}{{.ObjectMeta.Name}}={{.Spec.CIDR}};{{end}}{{end}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "ippools", "-o", `go-template={{range .}}{{range .Items}}{{.Name}} {{join .Spec.AllowedUses "+"}}{{"\n"}}{{end}}{{end}}`},
			"pool-a Workload+Tunnel\npool-b Workload+Tunnel\n"},
		{[]string{"get", "ippools", "pool-b", "pool-a", "-o", `go-template={{range .}}{{.ObjectMeta.Name}},{{end}}`}, "pool-b,pool-a,"},
		{[]string{"get", "profile", "uplink", "-o", `go-template={{range .}}{{join .Spec.LabelsToApply ","}}|{{joinAndTruncate .Spec.LabelsToApply "," 8}}{{end}}`},
			"role=host,zone=a|role=..."},
		{[]string{"get", "nodes", "h2", "-o", `go-template={{config "asnumber"}}`}, "64512"},
		{[]string{"get", "ippools", "-o", "go-template-file=" + file}, "IPPoolList pool-a=10.10.0.0/16;pool-b=fd00:10::/64;"},
	} {
		if got := e.mustRun(tt.args...); got != tt.want {
			t.Errorf("tortie %s:\n%q\nwant:\n%q", strings.Join(tt.args, " "), got, tt.want)
		}
	}
	if _, err := e.run("", "get", "ippools", "-o", `go-template={{range .}}{{.Nope}}{{end}}`); err == nil || !strings.Contains(err.Error(), "Nope") {
		t.Errorf("a field that is not there: %v", err)
	}
}

// TestGetSelector: -l keeps the resources whose labels match a Kubernetes
// label selector.
func TestGetSelector(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", "testdata/get-fixtures.yaml")
	e.mustRun("label", "node", "h2", "rack=r2")
	names := func(args ...string) string {
		t.Helper()
		return e.mustRun(append(args, "-o", `go-template={{range .}}{{range .Items}}{{.Name}} {{end}}{{end}}`)...)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "nodes", "-l", "rack=r1"}, "h1 "},
		{[]string{"get", "nodes", "--selector", "rack in (r1,r2)"}, "h1 h2 "},
		{[]string{"get", "nodes", "-l", "!rack"}, "h3 "},
		{[]string{"get", "nodes", "-l", "rack!=r1"}, "h2 h3 "},
		{[]string{"get", "wep", "-A", "-l", "app=web"}, "h1-k8s-frontend--1-eth0 "},
		{[]string{"get", "wep", "-l", "app=web"}, ""}, // namespace default
	} {
		if got := names(tt.args...); got != tt.want {
			t.Errorf("tortie %s: %q, want %q", strings.Join(tt.args, " "), got, tt.want)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "nodes", "-l", "rack in ("}, "--selector: "},
		{[]string{"get", "nodes", "h1", "-l", "rack=r1"}, "cannot use --selector when getting resources by name"},
	} {
		if _, err := e.run("", tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("tortie %v: %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestGetFromManifest: get -f shows, as stored, the resources a manifest
// names; the missing ones are named in the error.
func TestGetFromManifest(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", "testdata/get-fixtures.yaml")
	manifest := `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-b}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: absent}
`
	out, err := e.run(manifest, "get", "-f", "-")
	if err == nil || err.Error() != "<stdin> document 3: resource does not exist: GlobalNetworkSet(absent)" {
		t.Errorf("get -f: error %v", err)
	}
	if want := "NAME     CIDR           SELECTOR       \npool-b   fd00:10::/64   rack == 'r2'   \n\nNAME   TIER      \nweb    default   \n\n"; out != want {
		t.Errorf("get -f:\n%s\nwant:\n%s", out, want)
	}
	out, _ = e.run(manifest, "get", "-f", "-", "-o", "yaml")
	if !strings.HasPrefix(out, "- apiVersion: projectcalico.org/v3\n  kind: IPPool\n") || !strings.Contains(out, "order: 200") {
		t.Errorf("get -f -o yaml:\n%s", out)
	}
	if out, err := e.run("", "get", "-f", "-", "--skip-empty"); err != nil || out != "" {
		t.Errorf("get -f of nothing, --skip-empty: %q %v", out, err)
	}
	if _, err := e.run(manifest, "get", "ippools", "-f", "-"); err == nil {
		t.Error("get KIND with -f accepted")
	}
}
