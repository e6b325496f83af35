package v3

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// storedEndpoint is a WorkloadEndpoint as tortie's client stores one.
const storedEndpoint = `{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{"name":"host7-k8s-p123-eth0","namespace":"ns12","uid":"4b7b0c57-1d0e-4b1a-9d55-7f3c2d0e9a11","creationTimestamp":"2026-12-07T11:31:20Z","labels":{"app":"app3","projectcalico.org/namespace":"ns12","projectcalico.org/orchestrator":"k8s","tier":"t0"}},"spec":{"orchestrator":"k8s","node":"host7","pod":"p123","endpoint":"eth0","ipNetworks":["10.100.12.125/32"],"profiles":["kns.ns12"],"interfaceName":"cali0000c00007b"}}`

// sameAsEncodingJSON checks that UnmarshalStored leaves a new object of
// kind exactly as json.Unmarshal does, error included.
func sameAsEncodingJSON(t *testing.T, kind string, js []byte) {
	t.Helper()
	k, _ := KindByKind(kind)
	got, want := k.NewObject(), k.NewObject()
	errGot, errWant := UnmarshalStored(js, got), json.Unmarshal(js, want)
	if fmt.Sprint(errGot) != fmt.Sprint(errWant) {
		t.Fatalf("%s: error %v, encoding/json's %v", js, errGot, errWant)
	}
	if errWant == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %#v\n want %#v", js, got, want)
	}
}

func TestUnmarshalStoredIsEncodingJSON(t *testing.T) {
	replace := func(old, new string) string {
		if !strings.Contains(storedEndpoint, old) {
			t.Fatalf("%q is not in the stored endpoint", old)
		}
		return strings.Replace(storedEndpoint, old, new, 1)
	}
	for _, tc := range []struct {
		name string
		js   string
		// fast: the endpoint decoder reads it without json.Unmarshal.
		fast bool
	}{
		{"as stored", storedEndpoint, true},
		{"as Calico's CNI plugin stores one", `{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{"name":"n1-k8s-web-eth0","generateName":"web-","namespace":"default","uid":"u1","resourceVersion":"17","creationTimestamp":null,"labels":{"app":"web","projectcalico.org/namespace":"default"},"annotations":{"cni.projectcalico.org/containerID":"abc"}},"spec":{"orchestrator":"k8s","workload":"","node":"n1","containerID":"abc","pod":"web","endpoint":"eth0","serviceAccountName":"default","ipNetworks":["10.65.0.2/32","fd00::2/128"],"ipNATs":[{"internalIP":"10.65.0.2","externalIP":"192.0.2.9"}],"ipv4Gateway":"169.254.1.1","ipv6Gateway":"fe80::1","profiles":["kns.default","ksa.default.default"],"interfaceName":"cali12345678901","mac":"ee:ee:ee:ee:ee:ee","ports":[{"name":"http","protocol":"TCP","port":80,"hostPort":0,"hostIP":""},{"name":"dns","protocol":17,"port":53}],"allowSpoofedSourcePrefixes":["192.0.2.0/24"]}}`, true},
		{"spaced out", " {\n\t\"kind\" : \"WorkloadEndpoint\" ,\r\n \"metadata\" : { \"name\" : \"a\" , \"labels\" : { } } , \"spec\" : { \"profiles\" : [ ] , \"ipNetworks\" : [ \"10.0.0.1/32\" ] } }\n", true},
		{"empty", `{}`, true},
		{"unicode", replace(`"tier":"t0"`, `"tier":"t0","owner":"Zoë 🐈"`), true},
		{"empty lists and maps", replace(`"profiles":["kns.ns12"]`, `"profiles":[],"allowSpoofedSourcePrefixes":[],"ports":[]`), true},
		{"an escape", replace(`"pod":"p123"`, `"pod":"p\u0031\n23"`), false},
		{"an escaped key", replace(`"pod":"p123"`, `"p\u006fd":"p123"`), false},
		{"invalid UTF-8", replace(`"pod":"p123"`, "\"pod\":\"p\xff123\""), false},
		{"a control character", replace(`"pod":"p123"`, "\"pod\":\"p\x01123\""), false},
		{"null string", replace(`"pod":"p123"`, `"pod":null`), false},
		{"null list", replace(`"profiles":["kns.ns12"]`, `"profiles":null`), false},
		{"null labels", replace(`"labels":{`, `"labels":null,"annotations":{`), false},
		{"a key in another case", replace(`"pod":"p123"`, `"Pod":"p123"`), false},
		{"a key twice", replace(`"pod":"p123"`, `"pod":"p1","pod":"p123"`), false},
		{"a label twice", replace(`"tier":"t0"`, `"tier":"t0","tier":"t1"`), false},
		{"an unknown field", replace(`"pod":"p123"`, `"pod":"p123","color":"grey"`), false},
		{"an unknown metadata field", replace(`"namespace":"ns12"`, `"namespace":"ns12","generation":3`), false},
		{"a deletion timestamp", replace(`"namespace":"ns12"`, `"namespace":"ns12","deletionTimestamp":"2026-12-07T11:31:21Z"`), false},
		{"a number for a string", replace(`"pod":"p123"`, `"pod":123`), false},
		{"a string for a list", replace(`"profiles":["kns.ns12"]`, `"profiles":"kns.ns12"`), false},
		{"a number in a list", replace(`"profiles":["kns.ns12"]`, `"profiles":["kns.ns12",7]`), false},
		{"a bad port", replace(`"interfaceName"`, `"ports":[{"port":"http"}],"interfaceName"`), false},
		{"a bad protocol", replace(`"interfaceName"`, `"ports":[{"protocol":true,"port":1}],"interfaceName"`), false},
		{"a bad timestamp", replace(`2026-12-07T11:31:20Z`, `yesterday`), false},
		{"trailing data", storedEndpoint + `{}`, false},
		{"trailing comma", replace(`"tier":"t0"}`, `"tier":"t0",}`), false},
		{"cut short", storedEndpoint[:len(storedEndpoint)/2], false},
		{"not an object", `["WorkloadEndpoint"]`, false},
		{"not JSON", `kind: WorkloadEndpoint`, false},
		{"nothing", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sameAsEncodingJSON(t, KindWorkloadEndpoint, []byte(tc.js))
			var w WorkloadEndpoint
			if fast := decodeWorkloadEndpoint([]byte(tc.js), &w); fast != tc.fast {
				t.Errorf("read by the endpoint decoder: %v, want %v", fast, tc.fast)
			}
		})
	}
}

// Other kinds are json.Unmarshal's, rules presized as before.
func TestUnmarshalStoredOtherKinds(t *testing.T) {
	for kind, js := range map[string]string{
		KindNetworkPolicy: `{"kind":"NetworkPolicy","metadata":{"name":"p","namespace":"a"},"spec":{"selector":"all()","ingress":[{"action":"Allow"},{"action":"Deny"}]}}`,
		KindProfile:       `{"kind":"Profile","metadata":{"name":"kns.a"},"spec":{"labelsToApply":{"x":"y"}}}`,
		KindIPPool:        `{"kind":"IPPool","metadata":{"name":"p"},"spec":{"cidr":7}}`,
	} {
		sameAsEncodingJSON(t, kind, []byte(js))
	}
	k, _ := KindByKind(KindNetworkPolicy)
	r := k.NewObject()
	if err := UnmarshalStored([]byte(`{"spec":{"ingress":[{"action":"Allow"},{"action":"Deny"}]}}`), r); err != nil {
		t.Fatal(err)
	}
	if in := r.(*NetworkPolicy).Spec.Ingress; cap(in) != 2 {
		t.Errorf("ingress rules' capacity %d, want 2 (presized)", cap(in))
	}
}

// FuzzUnmarshalStored: whatever the bytes, UnmarshalStored is
// json.Unmarshal.
func FuzzUnmarshalStored(f *testing.F) {
	f.Add([]byte(storedEndpoint))
	f.Add([]byte(`{"metadata":{"labels":{"a":"b","a":"c"}},"spec":{"ports":[{"protocol":"UDP","port":53}]}}`))
	f.Add([]byte(`{"spec":{"ipNetworks":["10.0.0.1/32"],"profiles":[]}} `))
	f.Fuzz(func(t *testing.T, js []byte) {
		sameAsEncodingJSON(t, KindWorkloadEndpoint, js)
	})
}

func BenchmarkUnmarshalStoredEndpoint(b *testing.B) {
	js := []byte(storedEndpoint)
	for _, d := range []struct {
		name   string
		decode func([]byte, Resource) error
	}{
		{"UnmarshalStored", UnmarshalStored},
		{"encoding-json", func(js []byte, r Resource) error { return json.Unmarshal(js, r) }},
	} {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := d.decode(js, &WorkloadEndpoint{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
