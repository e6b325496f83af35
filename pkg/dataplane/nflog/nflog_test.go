package nflog

import (
	"bytes"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/tortie/tortie/internal/testenv"
)

// TestReceive logs a UDP packet with nft in a fresh network namespace and
// reads it back: prefix, payload cut to the snap length, hook, sequence;
// a second socket cannot bind the same group.
func TestReceive(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		testenv.Missing(t, "the nft binary")
	}
	n, name := testenv.NewNS(t)
	testenv.Sh(t, "ip", "-n", name, "link", "set", "lo", "up")
	const group = 77
	rules := "table inet t {\n chain o {\n type filter hook output priority 0;\n udp dport 9 log prefix \"probe\" group 77 snaplen 40\n }\n}\n"
	cmd := exec.Command("ip", "netns", "exec", name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	var c *Conn
	err := n.Do(func(ns.NetNS) (err error) {
		c, err = Open(group, 40)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = n.Do(func(ns.NetNS) error {
		if _, err := Open(group, 40); err == nil || !strings.Contains(err.Error(), "bound by another process") {
			t.Errorf("a second bind of group %d: %v, want it refused", group, err)
		}
		for range 2 {
			u, err := net.Dial("udp", "127.0.0.1:9")
			if err != nil {
				return err
			}
			_, _ = u.Write(make([]byte, 200))
			u.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []Message
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < 2 && time.Now().Before(deadline) {
		ms, err := c.Receive()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			m.Payload = bytes.Clone(m.Payload) // valid until the next Receive
			got = append(got, m)
		}
	}
	if len(got) != 2 {
		t.Fatalf("%d messages, want 2", len(got))
	}
	m := got[0]
	if m.Prefix != "probe" || len(m.Payload) != 40 || m.Payload[0]>>4 != 4 || m.Hook != 3 /* NF_INET_LOCAL_OUT */ {
		t.Errorf("message %+v (payload %d bytes)", m, len(m.Payload))
	}
	if got[1].Seq != m.Seq+1 {
		t.Errorf("sequence %d then %d, want consecutive", m.Seq, got[1].Seq)
	}
	c.Close()
	if _, err := c.Receive(); !IsClosed(err) {
		t.Errorf("Receive after Close: %v, want IsClosed", err)
	}
}
