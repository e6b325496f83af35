package numorstring

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPortJSON(t *testing.T) {
	tests := []struct {
		in     string
		want   Port
		out    string // marshalled form
		decErr string // substring of the decode error
		valErr string // substring of the Validate error
		str    string
	}{
		{in: `80`, want: SinglePort(80), out: `80`, str: "80"},
		{in: `"80"`, want: SinglePort(80), out: `80`, str: "80"},
		{in: `"8000:8080"`, want: PortFromRange(8000, 8080), out: `"8000:8080"`, str: "8000:8080"},
		{in: `"80:80"`, want: SinglePort(80), out: `80`, str: "80"},
		{in: `"http"`, want: NamedPort("http"), out: `"http"`, str: "http"},
		{in: `"90:80"`, want: PortFromRange(90, 80), out: `"90:80"`, valErr: "port range 90:80 is reversed"},
		{in: `0`, want: SinglePort(0), out: `0`, valErr: "port 0 is invalid"},
		{in: `"0:10"`, want: PortFromRange(0, 10), out: `"0:10"`, valErr: "starts at 0"},
		{in: `65535`, want: SinglePort(65535), out: `65535`},
		{in: `"-bad-"`, want: NamedPort("-bad-"), out: `"-bad-"`, valErr: `port name "-bad-" is invalid`},
		{in: `"90:abc"`, decErr: `port "90:abc" is not a number, range or name`},
		{in: `"a b"`, decErr: `port "a b" is not a number, range or name`},
		{in: `":80"`, decErr: `is not a number, range or name`},
		{in: `65536`, decErr: "is not a number 0-65535"},
		{in: `-1`, decErr: "is not a number 0-65535"},
		{in: `1.5`, decErr: "is not a number 0-65535"},
		{in: `"70000"`, decErr: "out of range"},
		{in: `"1:70000"`, decErr: "out of range"},
		{in: `true`, decErr: "must be a number or a string"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var p Port
			err := json.Unmarshal([]byte(tt.in), &p)
			if tt.decErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.decErr) {
					t.Fatalf("decode error = %v, want %q", err, tt.decErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if p != tt.want {
				t.Fatalf("got %+v, want %+v", p, tt.want)
			}
			b, err := json.Marshal(p)
			if err != nil || string(b) != tt.out {
				t.Fatalf("marshal = %s, %v; want %s", b, err, tt.out)
			}
			var again Port
			if err := json.Unmarshal(b, &again); err != nil || again != p {
				t.Fatalf("round trip = %+v, %v", again, err)
			}
			if tt.str != "" && p.String() != tt.str {
				t.Errorf("String() = %q, want %q", p.String(), tt.str)
			}
			verr := p.Validate()
			switch {
			case tt.valErr == "" && verr != nil:
				t.Errorf("Validate: %v", verr)
			case tt.valErr != "" && (verr == nil || !strings.Contains(verr.Error(), tt.valErr)):
				t.Errorf("Validate = %v, want %q", verr, tt.valErr)
			}
		})
	}
}

func TestPortList(t *testing.T) {
	var ps []Port
	if err := json.Unmarshal([]byte(`[80, "443", "1000:2000", "metrics"]`), &ps); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ps)
	if string(b) != `[80,443,"1000:2000","metrics"]` {
		t.Fatalf("got %s", b)
	}
	if !ps[3].IsNamed() || ps[0].IsNamed() {
		t.Error("IsNamed wrong")
	}
}
