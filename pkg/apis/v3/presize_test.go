package v3

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestPresizeRules(t *testing.T) {
	for _, tc := range []struct {
		name    string
		r       Resource
		js      string
		in, eg  int // capacities PresizeRules gives
		decodes bool
	}{
		{"both", &NetworkPolicy{}, `{"kind":"NetworkPolicy","spec":{"ingress":[{"action":"Allow"},{"action":"Deny"}],"egress":[{"action":"Allow"}]}}`, 2, 1, true},
		{"strings with brackets and escapes", &GlobalNetworkPolicy{}, `{"metadata":{"name":"a\"]}spec"},"spec":{"selector":"x == '[{'","ingress":[{"action":"Allow","source":{"nets":["10.0.0.0/8","[\"]"],"ports":[80,"1:2"]}},{"action":"Pass"}, {"action":"Log"}]}}`, 3, 0, true},
		{"whitespace", &StagedNetworkPolicy{}, " {\n \"spec\" : { \"egress\" : [ {\"action\":\"Allow\"} , {\"action\":\"Deny\"} ] } }\n", 0, 2, true},
		{"empty and null lists", &Profile{}, `{"spec":{"ingress":[],"egress":null}}`, 0, 0, true},
		{"the last spec counts", &StagedGlobalNetworkPolicy{}, `{"spec":{"ingress":[{},{}]},"spec":{"ingress":[{}]}}`, 1, 0, true},
		{"numbers and literals", &NetworkPolicy{}, `{"spec":{"order":10.5,"ingress":[{"action":"Allow","protocol":6,"notProtocol":null,"destination":{"ports":[1,2,3]}}],"doNotTrack":true}}`, 1, 0, false},
		{"malformed", &NetworkPolicy{}, `{"spec":{"ingress":[{"action":"Allow"}`, 0, 0, false},
		{"not an object", &NetworkPolicy{}, `[1,2]`, 0, 0, false},
		{"a kind without rules", &Tier{}, `{"spec":{"order":1}}`, 0, 0, true},
	} {
		PresizeRules(tc.r, []byte(tc.js))
		var in, eg []Rule
		if pin, peg := ruleLists(tc.r); pin != nil {
			in, eg = *pin, *peg
		}
		if cap(in) != tc.in || cap(eg) != tc.eg || len(in) != 0 || len(eg) != 0 {
			t.Errorf("%s: ingress len %d cap %d, egress len %d cap %d; want caps %d, %d", tc.name, len(in), cap(in), len(eg), cap(eg), tc.in, tc.eg)
		}
		if (tc.in == 0 && in != nil) || (tc.eg == 0 && eg != nil) {
			t.Errorf("%s: a list js has no rules for is not nil", tc.name)
		}
		if !tc.decodes {
			continue
		}
		// The same value with and without.
		plain := reflect.New(reflect.TypeOf(tc.r).Elem()).Interface()
		if err := json.Unmarshal([]byte(tc.js), plain); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := json.Unmarshal([]byte(tc.js), tc.r); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(plain, tc.r) {
			t.Errorf("%s: decodes to %+v presized, %+v not", tc.name, tc.r, plain)
		}
	}
}
