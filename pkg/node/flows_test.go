package node_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
	"github.com/tortie/tortie/pkg/node"
)

// TestFlowsStalledConsumer: a follower that stops reading (its TCP
// window fills) never holds up the records: publishing goes on, other
// clients are served, and the stalled one lost records, not the agent.
func TestFlowsStalledConsumer(t *testing.T) {
	f, err := node.NewFlows(node.FlowsConfig{NodeName: "n1", Group: 30, Index: flowlog.NewIndex()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/status/flows", f.ServeStatus)
	ts := httptest.NewServer(mux)
	defer ts.Close()

	// A follower that sends its request and never reads.
	stalled, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	fmt.Fprintf(stalled, "GET /status/flows?follow=1&last=0 HTTP/1.1\r\nHost: x\r\n\r\n")
	for f.Hub().Stats().Subscribers == 0 {
		time.Sleep(5 * time.Millisecond)
	}

	rec := flowlog.Record{Direction: calc.Ingress, Action: calc.Allow, Protocol: "TCP", Connections: 1,
		Src: flowlog.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Namespace: "ns", Name: strings.Repeat("x", 200)},
		Dst: flowlog.Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: 80}}
	done := make(chan struct{})
	go func() {
		for range 200_000 {
			f.Hub().Publish(rec)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("publishing 200,000 records did not finish: a stalled follower blocks the agent")
	}
	// Another client is served.
	resp, err := http.Get(ts.URL + "/status/flows?last=3")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); n++ {
	}
	if n != 3 {
		t.Errorf("another client got %d records, want 3", n)
	}
	if st := f.Hub().Stats(); st.Published != 200_000 || st.Held != 100_000 {
		t.Errorf("hub %+v", st)
	}
}
