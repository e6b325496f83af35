package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/flowlog"
	"github.com/tortie/tortie/pkg/flowui"
	"github.com/tortie/tortie/pkg/nodestatus"
)

// flowsPath is where tortie-node serves its flow records.
const flowsPath = "/status/flows"

func newFlowsCommand(g *globals) *cobra.Command {
	var (
		follow              bool
		last                int
		addr, output        string
		namespace, workload string
		sel, policy, action string
		protocol, port      string
	)
	cmd := &cobra.Command{
		Use:   "flows [-f] [--last N] [filters]",
		Short: "Show the connections this host's policy decided, with the deciding rule",
		Long: `Show flow records from the tortie-node agent on this host: for each connection
through a local endpoint, in each direction, its two ends (with their
namespace, name and labels when they are endpoints or network sets), the
verdict, and the tier, policy and rule that decided it (or the end of a tier,
the profile, the final deny). The agent logs a connection's first packet
where policy decides; a flow's first connection in an interval is a record at
once, the others with the same ends, port and decision one record when the
interval (FelixConfiguration flowLogsFlushInterval, 15s) ends, saying how
many connections it folds together.

The agent keeps flow logs when FelixConfiguration flowLogsLocalReporter is
Enabled, and serves them on its health address (--agent-address) to loopback
clients only.

Filters (all must hold; an end matches when either end does):
  --namespace NS     an end in namespace NS
  --workload NAME    an end named NAME (endpoint, pod, host endpoint, network set)
  --selector SEL     an end whose labels match the Calico selector SEL
  --policy NAME      decided by policy NAME (ns/name, tier/ns/name, profile/NAME)
  --action A         allow or deny
  --port P           destination port P
  --protocol P       tcp, udp, icmp, ... or a number`,
		Example: `  tortie flows --last 50
  tortie flows -f --namespace shop
  tortie flows -f --action deny -o json
  tortie flows --policy shop/web --port 8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			set := func(k, v string) {
				if v != "" {
					q.Set(k, v)
				}
			}
			set("namespace", namespace)
			set("workload", workload)
			set("selector", sel)
			set("policy", policy)
			set("action", action)
			set("protocol", protocol)
			set("port", port)
			// The agent checks the filter too; checking it here names the
			// flag and needs no agent.
			if _, err := flowlog.ParseFilter(q); err != nil {
				return fmt.Errorf("bad filter: --%s", err)
			}
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			if last < 0 {
				return fmt.Errorf("--last %d: want 0 or more", last)
			}
			q.Set("last", strconv.Itoa(last))
			if follow {
				q.Set("follow", "1")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return streamFlows(ctx, g.out, addr, q, output == "json")
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new records as they come")
	f.IntVar(&last, "last", 20, "print the last N records first (0: none)")
	f.StringVar(&addr, "agent-address", nodestatus.DefaultStatusAddr, "host:port where tortie-node serves its health and status")
	f.StringVarP(&output, "output", "o", "table", "table or json (one object per line)")
	f.StringVar(&namespace, "namespace", "", "an end in this namespace")
	f.StringVar(&workload, "workload", "", "an end with this name")
	f.StringVar(&sel, "selector", "", "an end whose labels match this selector")
	f.StringVar(&policy, "policy", "", "decided by this policy")
	f.StringVar(&action, "action", "", "allow or deny")
	f.StringVar(&port, "port", "", "destination port")
	f.StringVar(&protocol, "protocol", "", "protocol name or number")
	cmd.AddCommand(newFlowsServeCommand(g, "serve"))
	return cmd
}

// streamFlows prints the records the agent at addr serves for q until
// the response ends (or ctx does, with --follow).
func streamFlows(ctx context.Context, w io.Writer, addr string, q url.Values, raw bool) error {
	u := "http://" + addr + flowsPath + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("tortie-node is not running here: cannot reach the agent at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return fmt.Errorf("tortie-node at %s keeps no flow logs: set flowLogsLocalReporter: Enabled in its FelixConfiguration", addr)
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("tortie-node at %s answered %s: %s", addr, resp.Status, strings.TrimSpace(string(b)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if raw {
			if _, err := fmt.Fprintf(w, "%s\n", line); err != nil {
				return err
			}
			continue
		}
		var r flowlog.Record
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("tortie-node at %s: unreadable record: %w", addr, err)
		}
		if _, err := io.WriteString(w, flowLine(&r)+"\n"); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("reading from tortie-node at %s: %w", addr, err)
	}
	return nil
}

// flowLine is one record in one line, in the spirit of `hubble observe`:
// when, from, to, protocol, the deciding side, verdict, what decided, and
// how many connections.
func flowLine(r *flowlog.Record) string {
	end := func(e flowlog.Endpoint) string {
		a := e.Addr.String()
		if e.Port != 0 {
			a = fmt.Sprintf("%s:%d", a, e.Port)
			if e.Addr.Is6() {
				a = fmt.Sprintf("[%s]:%d", e.Addr, e.Port)
			}
		}
		if name := e.String(); name != e.Addr.String() {
			return name + " (" + a + ")"
		}
		return a
	}
	proto := r.Protocol
	if r.ICMPType != nil {
		proto += fmt.Sprintf(" type %d", *r.ICMPType)
		if r.ICMPCode != nil && *r.ICMPCode != 0 {
			proto += fmt.Sprintf(" code %d", *r.ICMPCode)
		}
	}
	verdict := func(a string) string {
		if a == "Allow" {
			return "ALLOWED"
		}
		return "DENIED"
	}
	conns := ""
	if r.Connections != 1 {
		conns = fmt.Sprintf(" [%d connections]", r.Connections)
	}
	if r.PacketsOut+r.PacketsIn > 0 {
		conns += fmt.Sprintf(" [ended: %d/%d packets, %d/%d bytes out/back]", r.PacketsOut, r.PacketsIn, r.BytesOut, r.BytesIn)
	}
	staged := ""
	if s := r.Staged; s != nil {
		staged = fmt.Sprintf(" (staged: would be %s by %s)", verdict(string(s.Action)), s.Decision)
	}
	return fmt.Sprintf("%s %s: %s -> %s %s %s %s by %s%s%s", r.Start.Local().Format(time.StampMilli), r.Node,
		end(r.Src), end(r.Dst), proto, strings.ToLower(string(r.Direction)), verdict(string(r.Action)), r.Decision, conns, staged)
}

// newFlowsServeCommand is `tortie flows serve`, also `tortie ui`.
func newFlowsServeCommand(g *globals, use string) *cobra.Command {
	var (
		listen, tokenFile string
		agents            []string
		ring              int
	)
	cmd := &cobra.Command{
		Use:   use + " [--listen ADDR] [--agent HOST:PORT ...] [--token-file FILE]",
		Short: "Collect every agent's flows and serve the web view of them",
		Long: `Follow the flow records of tortie-node agents (their health address, where
FelixConfiguration flowLogsLocalReporter: Enabled serves them) into one ring of
recent records, and serve a web view and its API on one port:

  live flows       new records as they come, with the filters of tortie flows
  graph            who talks to whom, edges green (allowed) or red (something
                   denied); click one for its flows and the deciding rules
  policies         tiers and policies in order (read from the datastore), each
                   rule with the connections it decided

Agents serve flow records to loopback clients only, unless they were started
with TORTIE_FLOW_TOKEN_FILE: give the same token here (--token-file) to follow
agents on other hosts. The view itself is served to loopback clients, and to
others presenting the token (open http://ADDR/?token=TOKEN once; it is kept in
a cookie). API: /api/flows, /api/stream (server-sent events), /api/graph,
/api/board, /api/agents.`,
		Example: `  tortie ` + use + `
  tortie ` + use + ` --agent 10.0.0.11:9099 --agent 10.0.0.12:9099 --token-file /etc/tortie/flow-token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			token := ""
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				if token = strings.TrimSpace(string(b)); token == "" {
					return fmt.Errorf("--token-file %s is empty", tokenFile)
				}
			}
			if len(agents) == 0 {
				return fmt.Errorf("--agent: give at least one agent address")
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", listen, err)
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			hub := flowlog.NewHub(ring)
			log := slog.New(slog.NewTextHandler(g.errw, nil))
			col := flowui.NewCollector(agents, token, hub, log)
			srv := &flowui.Server{Hub: hub, Collector: col, Token: token}
			go col.Run(ctx)
			go refreshBoard(ctx, g, srv, log)
			hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-ctx.Done()
				_ = hs.Close()
			}()
			fmt.Fprintf(g.out, "serving the flow view on http://%s/ (following %s)\n", ln.Addr(), strings.Join(agents, ", "))
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:9097", "address to serve the web view and API on")
	f.StringSliceVar(&agents, "agent", []string{nodestatus.DefaultStatusAddr}, "an agent's health address (repeat, or comma-separate, for several)")
	f.StringVar(&tokenFile, "token-file", "", "the flow token: presented to agents, and required from clients that are not on loopback")
	f.IntVar(&ring, "ring", 100_000, "how many recent records to keep")
	return cmd
}

// refreshBoard reads the tiers and policies for the board every 10 s. A
// datastore that cannot be reached leaves the board to what the records
// name, said once in the log.
func refreshBoard(ctx context.Context, g *globals, srv *flowui.Server, log *slog.Logger) {
	warned := false
	for {
		rs, err := boardResources(g)
		switch {
		case err == nil:
			srv.SetResources(rs)
			warned = false
		case !warned:
			log.Warn("policy board: cannot read the datastore; showing the policies the flow records name", "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

func boardResources(g *globals) ([]v3.Resource, error) {
	c, ctx, done, err := g.session()
	if err != nil {
		return nil, err
	}
	defer done()
	var rs []v3.Resource
	for _, kind := range []string{v3.KindTier, v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy, v3.KindStagedNetworkPolicy, v3.KindStagedGlobalNetworkPolicy} {
		k, _ := v3.KindByKind(kind)
		list, _, err := c.List(ctx, k, "")
		if err != nil {
			return nil, err
		}
		rs = append(rs, list...)
	}
	return rs, nil
}
