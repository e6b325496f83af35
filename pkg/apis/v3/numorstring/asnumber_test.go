package numorstring

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestASNumberJSON(t *testing.T) {
	good := []struct {
		in   string
		want ASNumber
		out  string
	}{
		{`65000`, 65000, `65000`},
		{`"65000"`, 65000, `65000`},
		{`"1.10"`, 65546, `65546`},
		{`"0.65535"`, 65535, `65535`},
		{`"65535.65535"`, 4294967295, `4294967295`},
		{`4294967295`, 4294967295, `4294967295`},
		{`0`, 0, `0`},
	}
	for _, c := range good {
		var a ASNumber
		if err := json.Unmarshal([]byte(c.in), &a); err != nil {
			t.Errorf("%s: unexpected error %v", c.in, err)
			continue
		}
		if a != c.want {
			t.Errorf("%s: got %d, want %d", c.in, a, c.want)
		}
		out, err := json.Marshal(a)
		if err != nil || string(out) != c.out {
			t.Errorf("%s: marshal got %s %v, want %s", c.in, out, err, c.out)
		}
		if a.String() != c.out {
			t.Errorf("%s: String() = %q", c.in, a.String())
		}
	}
	bad := []struct{ in, msg string }{
		{`-1`, "invalid AS number"},
		{`4294967296`, "invalid AS number"},
		{`1.5`, "invalid AS number"},
		{`"1.65536"`, "dotted form"},
		{`"65536.1"`, "dotted form"},
		{`"1.2.3"`, "dotted form"},
		{`"a.b"`, "dotted form"},
		{`"abc"`, "invalid AS number"},
		{`""`, "must not be empty"},
		{`" 1"`, "invalid AS number"},
		{`true`, "invalid AS number"},
		{`{}`, "invalid AS number"},
	}
	for _, c := range bad {
		var a ASNumber
		err := json.Unmarshal([]byte(c.in), &a)
		if err == nil {
			t.Errorf("%s: expected an error, got %d", c.in, a)
			continue
		}
		if !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %q does not mention %q", c.in, err, c.msg)
		}
	}
}

func TestASNumberInStruct(t *testing.T) {
	var s struct {
		AS  ASNumber  `json:"asNumber,omitempty"`
		PAS *ASNumber `json:"p,omitempty"`
	}
	if err := json.Unmarshal([]byte(`{"asNumber":"1.10","p":64512}`), &s); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(s)
	if string(out) != `{"asNumber":65546,"p":64512}` {
		t.Errorf("got %s", out)
	}
}
