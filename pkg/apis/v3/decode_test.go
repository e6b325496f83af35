package v3

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name, doc string
		field     string
		detail    string
	}{
		{"unknown field", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/8, natOutgoin: true}\n", "spec.natOutgoin", "unknown field"},
		{"field names are case-sensitive", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {CIDR: 10.0.0.0/8}\n", "spec.CIDR", "unknown field"},
		{"type mismatch", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/8, blockSize: big}\n", "spec.blockSize", "cannot use string"},
		{"bad port inside a rule", "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: n, namespace: x}\nspec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [80, \"90:abc\"]}\n", "spec.ingress[0].destination.ports[1]", "90:abc"},
		{"bad AS number", "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: b}\nspec: {peerIP: 192.0.2.1, asNumber: \"1.2.3\"}\n", "spec.asNumber", "1.2.3"},
		{"bad protocol", "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n  egress: [{action: Allow, protocol: 300}]\n", "spec.egress[0].protocol", "300"},
		{"wrong apiVersion", "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {name: p}\n", "apiVersion", "projectcalico.org/v3"},
		{"missing kind", "apiVersion: projectcalico.org/v3\nmetadata: {name: p}\n", "kind", "missing"},
		{"unknown kind", "apiVersion: projectcalico.org/v3\nkind: Pod\nmetadata: {name: p}\n", "kind", "Pod"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode([]byte(c.doc))
			if err == nil {
				t.Fatal("decoded")
			}
			var fe *FieldError
			var list ErrorList
			switch {
			case errors.As(err, &list):
				fe = list[0]
			case errors.As(err, &fe):
			default:
				t.Fatalf("error without a field: %v", err)
			}
			if fe.Field != c.field || !strings.Contains(fe.Detail, c.detail) {
				t.Errorf("got %q: %q, want %q: ...%s...", fe.Field, fe.Detail, c.field, c.detail)
			}
		})
	}
}

// TestDecodeScalarsFollowTheTarget: unquoted YAML scalars headed for string
// fields keep their text, as kubectl decodes them.
func TestDecodeScalarsFollowTheTarget(t *testing.T) {
	r, err := Decode([]byte(`apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-cni-1234-eth0
  namespace: default
  labels: {routeReflector: true, build: 42}
spec:
  orchestrator: cni
  node: node1
  containerID: 1234
  endpoint: eth0
`))
	if err != nil {
		t.Fatal(err)
	}
	w := r.(*WorkloadEndpoint)
	if w.Spec.ContainerID != "1234" || w.Labels["routeReflector"] != "true" || w.Labels["build"] != "42" {
		t.Errorf("scalars not kept as text: %q %v", w.Spec.ContainerID, w.Labels)
	}
}

// A duplicated key is refused by the YAML reader itself, with its line.
func TestDecodeDuplicateKey(t *testing.T) {
	_, err := Decode([]byte("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec:\n  cidr: 10.0.0.0/8\n  cidr: 10.1.0.0/16\n"))
	if err == nil || !strings.Contains(err.Error(), `line 6: key "cidr" already set`) {
		t.Errorf("duplicate key: %v", err)
	}
}

func TestDecodeEmptyDocument(t *testing.T) {
	for _, doc := range []string{"", "   \n", "# only a comment\n", "null"} {
		if _, err := Decode([]byte(doc)); !errors.Is(err, ErrEmptyDocument) {
			t.Errorf("%q: %v", doc, err)
		}
	}
}
