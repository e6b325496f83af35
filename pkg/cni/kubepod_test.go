package cni

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPodIPAMRequest: the annotations of a pod and its namespace that
// choose its addresses, as Calico's plugin reads them; bad values fail with
// a message naming the object and the annotation.
func TestPodIPAMRequest(t *testing.T) {
	type want struct {
		addrs          []string
		pools4, pools6 []string
		from4          string
		families       *[2]int
	}
	for _, c := range []struct {
		name       string
		pod, ns    map[string]string
		delegated  bool
		want       want
		code       uint
		errContain string
	}{
		{name: "none"},
		{name: "ipAddrs", pod: map[string]string{"cni.projectcalico.org/ipAddrs": `["10.65.3.7", "fd00:65::7"]`},
			want: want{addrs: []string{"10.65.3.7", "fd00:65::7"}}},
		{name: "ipAddrs two IPv4", pod: map[string]string{"cni.projectcalico.org/ipAddrs": `["10.65.3.7", "10.65.3.8"]`},
			code: CodePodAnnotation, errContain: `Pod ns1/p1: annotation cni.projectcalico.org/ipAddrs "[\"10.65.3.7\", \"10.65.3.8\"]": more than one IPv4`},
		{name: "ipAddrs not JSON", pod: map[string]string{"cni.projectcalico.org/ipAddrs": `10.65.3.7`},
			code: CodePodAnnotation, errContain: "not a JSON list of IP addresses"},
		{name: "ipAddrs bad address", pod: map[string]string{"cni.projectcalico.org/ipAddrs": `["10.65.3.300"]`},
			code: CodePodAnnotation, errContain: `"10.65.3.300" is not an IP address`},
		{name: "ipAddrs empty list", pod: map[string]string{"cni.projectcalico.org/ipAddrs": `[]`},
			code: CodePodAnnotation, errContain: "no address"},
		{name: "ipAddrs with host-local", delegated: true, pod: map[string]string{"cni.projectcalico.org/ipAddrs": `["10.65.3.7"]`},
			code: CodePodAnnotation, errContain: "needs Calico's IPAM"},
		{name: "ipAddrsNoIpam refused", pod: map[string]string{"cni.projectcalico.org/ipAddrsNoIpam": `["10.65.3.7"]`},
			code: types.ErrUnsupportedField, errContain: "annotation cni.projectcalico.org/ipAddrsNoIpam is set"},
		{name: "both ipAddrs annotations", pod: map[string]string{"cni.projectcalico.org/ipAddrsNoIpam": `["10.65.3.7"]`, "cni.projectcalico.org/ipAddrs": `["10.65.3.7"]`},
			code: CodePodAnnotation, errContain: "cannot be used together"},
		{name: "floatingIPs refused", pod: map[string]string{"cni.projectcalico.org/floatingIPs": `["1.2.3.4"]`},
			code: types.ErrUnsupportedField, errContain: "floatingIPs"},
		{name: "allowedSourcePrefixes refused", pod: map[string]string{"cni.projectcalico.org/allowedSourcePrefixes": `["1.2.3.0/24"]`},
			code: types.ErrUnsupportedField, errContain: "allowedSourcePrefixes"},
		{name: "namespace pools", ns: map[string]string{"cni.projectcalico.org/ipv4pools": `["blue"]`, "cni.projectcalico.org/ipv6pools": `["fd00:65::/48"]`},
			want: want{pools4: []string{"blue"}, pools6: []string{"fd00:65::/48"}, from4: "annotation cni.projectcalico.org/ipv4pools of Namespace ns1"}},
		{name: "pod pools win over the namespace's", pod: map[string]string{"cni.projectcalico.org/ipv4pools": `["10.66.0.0/16"]`}, ns: map[string]string{"cni.projectcalico.org/ipv4pools": `["blue"]`},
			want: want{pools4: []string{"10.66.0.0/16"}, from4: "annotation cni.projectcalico.org/ipv4pools of Pod ns1/p1"}},
		{name: "pools ignored with host-local, as by Calico", delegated: true, pod: map[string]string{"cni.projectcalico.org/ipv4pools": `["blue"]`}},
		{name: "bad pools on the namespace", ns: map[string]string{"cni.projectcalico.org/ipv4pools": `blue`},
			code: CodePodAnnotation, errContain: `Namespace ns1: annotation cni.projectcalico.org/ipv4pools "blue": not a JSON list`},
		{name: "empty pool entry", pod: map[string]string{"cni.projectcalico.org/ipv6pools": `[" "]`},
			code: CodePodAnnotation, errContain: "an empty entry"},
		{name: "families", ns: map[string]string{"cni.projectcalico.org/ipFamilies": `["IPv6"]`},
			want: want{families: &[2]int{0, 1}}},
		{name: "bad family", pod: map[string]string{"cni.projectcalico.org/ipFamilies": `["IPv5"]`},
			code: CodePodAnnotation, errContain: `"IPv5" is neither`},
	} {
		t.Run(c.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "ns1", Annotations: c.pod}}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns1", Annotations: c.ns}}
			ipamType := CalicoIPAMType
			if c.delegated {
				ipamType = "host-local"
			}
			req, err := podIPAMRequest(pod, ns, !c.delegated, ipamType)
			if c.errContain != "" {
				te, ok := err.(*types.Error)
				if !ok || te.Code != c.code || !strings.Contains(te.Msg, c.errContain) {
					t.Fatalf("error %v, want code %d containing %q", err, c.code, c.errContain)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var addrs []string
			for _, a := range req.addrs {
				addrs = append(addrs, a.String())
			}
			got := want{addrs: addrs, pools4: req.pools4, pools6: req.pools6, from4: req.from4, families: req.families}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestParseAddrList(t *testing.T) {
	got, err := parseAddrList(`["::ffff:10.0.0.1", " fd00::1 "]`)
	if err != nil || !reflect.DeepEqual(got, []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}) {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{`["fe80::1%eth0"]`, `["fd00::1","fd00::2"]`, `{"a":1}`, `null`} {
		if _, err := parseAddrList(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
