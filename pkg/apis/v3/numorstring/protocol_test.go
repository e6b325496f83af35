package numorstring

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestProtocolJSON(t *testing.T) {
	tests := []struct {
		in     string
		want   Protocol
		out    string
		ports  bool
		num    uint8
		decErr string
		valErr string
	}{
		{in: `"TCP"`, want: ProtocolFromString("TCP"), out: `"TCP"`, ports: true, num: 6},
		{in: `"tcp"`, want: ProtocolFromString("tcp"), out: `"tcp"`, ports: true, num: 6},
		{in: `"Udp"`, want: ProtocolFromString("Udp"), out: `"Udp"`, ports: true, num: 17},
		{in: `"SCTP"`, want: ProtocolFromString("SCTP"), out: `"SCTP"`, ports: true, num: 132},
		{in: `"ICMP"`, want: ProtocolFromString("ICMP"), out: `"ICMP"`, num: 1},
		{in: `"ICMPv6"`, want: ProtocolFromString("ICMPv6"), out: `"ICMPv6"`, num: 58},
		{in: `"UDPLite"`, want: ProtocolFromString("UDPLite"), out: `"UDPLite"`, num: 136},
		{in: `6`, want: ProtocolFromInt(6), out: `6`, ports: true, num: 6},
		{in: `"17"`, want: ProtocolFromInt(17), out: `17`, ports: true, num: 17},
		{in: `132`, want: ProtocolFromInt(132), out: `132`, ports: true, num: 132},
		{in: `255`, want: ProtocolFromInt(255), out: `255`, num: 255},
		{in: `0`, want: ProtocolFromInt(0), out: `0`, valErr: "protocol number 0 is invalid"},
		{in: `"GRE"`, want: ProtocolFromString("GRE"), out: `"GRE"`, valErr: `protocol "GRE" is not one of`},
		{in: `256`, decErr: "is not a number 1-255"},
		{in: `-1`, decErr: "is not a number 1-255"},
		{in: `""`, decErr: "must not be empty"},
		{in: `{}`, decErr: "must be a name or a number"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var p Protocol
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
			if p.SupportsPorts() != tt.ports {
				t.Errorf("SupportsPorts = %v", p.SupportsPorts())
			}
			verr := p.Validate()
			if tt.valErr == "" {
				if verr != nil {
					t.Errorf("Validate: %v", verr)
				}
				if n, err := p.NumValue(); err != nil || n != tt.num {
					t.Errorf("NumValue = %d, %v; want %d", n, err, tt.num)
				}
			} else if verr == nil || !strings.Contains(verr.Error(), tt.valErr) {
				t.Errorf("Validate = %v, want %q", verr, tt.valErr)
			}
		})
	}
}

func TestProtocolHelpers(t *testing.T) {
	if s := ProtocolFromString("TCP").String(); s != "TCP" {
		t.Errorf("String = %q", s)
	}
	if s := ProtocolFromInt(58).String(); s != "58" {
		t.Errorf("String = %q", s)
	}
	if !ProtocolFromInt(1).Is("icmp") || !ProtocolFromString("icmpv6").Is(ProtocolICMPv6) || ProtocolFromString("TCP").Is("UDP") {
		t.Error("Is wrong")
	}
	if ProtocolFromString("GRE").Is("GRE") {
		t.Error("unknown names never match")
	}
	if p := ProtocolFromStringP("UDP"); p.StrVal != "UDP" {
		t.Error("ProtocolFromStringP")
	}
	if p := ProtocolFromIntP(6); p.NumVal != 6 || p.Type != NumOrStringNum {
		t.Error("ProtocolFromIntP")
	}
}
