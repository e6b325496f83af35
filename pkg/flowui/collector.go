// Package flowui is the cluster's view of its flows: a collector that
// follows the flow records of every agent (GET /status/flows?follow=1 on
// each tortie-node, with the flow token) into one ring, and the web view
// and API that serve them: live flows with filters, a graph of who talks
// to whom coloured by verdict, and the policy board with hit counts per
// rule. `tortie flows serve` runs both.
package flowui

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tortie/tortie/pkg/flowlog"
)

// AgentStatus is what the collector knows of one agent.
type AgentStatus struct {
	Addr      string    `json:"addr"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitempty"`
	Records   uint64    `json:"records"`
	LastError string    `json:"lastError,omitempty"`
}

// Collector follows agents' flow records into a hub.
type Collector struct {
	hub    *flowlog.Hub
	token  string
	agents []string
	log    *slog.Logger
	client *http.Client

	mu     sync.Mutex
	status map[string]*AgentStatus
}

// NewCollector follows the agents at addrs (host:port of their health
// address), presenting token, into hub.
func NewCollector(addrs []string, token string, hub *flowlog.Hub, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.Default()
	}
	c := &Collector{hub: hub, token: token, agents: slices.Clone(addrs), log: log,
		client: &http.Client{}, status: map[string]*AgentStatus{}}
	for _, a := range addrs {
		c.status[a] = &AgentStatus{Addr: a}
	}
	return c
}

// Run follows every agent until ctx ends, reconnecting (1 s, doubling to
// 10 s) when a stream breaks. The first connection to an agent takes the
// records it holds; a reconnection only what comes after.
func (c *Collector) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, a := range c.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			backoff, last := time.Second, 10000
			for ctx.Err() == nil {
				err := c.follow(ctx, a, last)
				if ctx.Err() != nil {
					break
				}
				c.set(a, func(s *AgentStatus) { s.Connected, s.LastError = false, err.Error() })
				c.log.Warn("flow collector: agent stream ended; reconnecting", "agent", a, "err", err, "in", backoff)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				backoff, last = min(2*backoff, 10*time.Second), 0
			}
		}()
	}
	wg.Wait()
}

func (c *Collector) set(a string, f func(*AgentStatus)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c.status[a])
}

// follow reads one agent's stream until it breaks.
func (c *Collector) follow(ctx context.Context, addr string, last int) error {
	q := url.Values{"follow": {"1"}, "last": {fmt.Sprint(last)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status/flows?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	c.set(addr, func(s *AgentStatus) { s.Connected, s.Since, s.LastError = true, time.Now(), "" })
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r flowlog.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("unreadable record: %w", err)
		}
		c.hub.Publish(r)
		c.set(addr, func(s *AgentStatus) { s.Records++ })
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// Agents is the status of every agent, in the order given.
func (c *Collector) Agents() []AgentStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]AgentStatus, 0, len(c.agents))
	for _, a := range c.agents {
		out = append(out, *c.status[a])
	}
	return out
}
