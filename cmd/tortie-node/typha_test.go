package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestTyphaSettingsRefused: typha settings that cannot work stop the agent
// before it touches the host, saying what is wrong.
func TestTyphaSettingsRefused(t *testing.T) {
	for _, k := range []string{"FELIX_TYPHAADDR", "FELIX_TYPHACAFILE", "FELIX_TYPHACERTFILE", "FELIX_TYPHAKEYFILE", "FELIX_TYPHACN", "FELIX_TYPHAURISAN"} {
		t.Setenv(k, "")
	}
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"TLS without an address", nil, []string{"--typha-ca-file", "/x/ca.pem"}, "typha TLS settings without --typha-addr"},
		{"half the TLS", nil, []string{"--typha-addr", "127.0.0.1:5473", "--typha-ca-file", "/x/ca.pem"},
			"typha TLS: missing [certificate file key file the typha's expected common name or URI SAN]"},
		{"half the TLS from the environment", map[string]string{"FELIX_TYPHAADDR": "127.0.0.1:5473", "FELIX_TYPHACN": "typha"}, nil,
			"typha TLS: missing [CA file certificate file key file]"},
		{"an address without a port", nil, []string{"--typha-addr", "typha.example"}, `typha address "typha.example"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var log bytes.Buffer
			cmd := newCommand(&log)
			cmd.SetArgs(append([]string{"--node-name", "n1", "--nodename-file", "-", "--health-addr", "", "--metrics-addr", "", "--etcd-endpoints", "http://127.0.0.1:1"}, tt.args...))
			if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
