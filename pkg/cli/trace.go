package cli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/trace"
)

func newPolicyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "policy",
		Short:   "Ask what policy does",
		Aliases: []string{"policies"},
	}
	cmd.AddCommand(newPolicyTraceCommand(g))
	return cmd
}

func newPolicyTraceCommand(g *globals) *cobra.Command {
	var (
		proto, icmp, output string
		port, srcPort       int
		ipVersion           int
	)
	cmd := &cobra.Command{
		Use:   "trace SRC DST [--protocol tcp] [--port P] [--src-port P] [--icmp TYPE[/CODE]]",
		Short: "Show which tier, policy and rule decide a connection, and why",
		Long: `Trace the first packet of a connection from SRC to DST through the policy the
datastore holds, without sending anything: the egress policy of SRC, then (if
that allows it) the ingress policy of DST, each tier and policy in order, every
rule considered with the condition that made it not match, and the verdict.
It reads the datastore and resolves it with the same calculation graph
tortie-node runs, so its answer is what the agents enforce.

SRC and DST are each:
  NAMESPACE/NAME   a workload endpoint: by its name, or by its pod's or
                   workload's name
  hep/NAME         a host endpoint (its ingress and egress policy, as for
                   traffic to and from the host)
  ADDRESS          the endpoint with that address, or an address outside the
                   cluster's endpoints (no policy on that side)

When staged policies exist (StagedNetworkPolicy, StagedGlobalNetworkPolicy),
the trace also answers as if they were in force: stagedAction Set puts each in
the place of the policy of the same name, Delete removes that policy.

Not traced: host endpoint policy for forwarded traffic (applyOnForward),
preDNAT and doNotTrack policy, and Services (give the backend's address).

Exit status 0 whatever the verdict; 1 when the trace cannot be made.`,
		Example: `  tortie policy trace shop/frontend shop/cart --port 8080
  tortie policy trace shop/frontend 10.96.4.7 --protocol udp --port 53
  tortie policy trace 192.0.2.10 hep/node1-eth0 --port 22
  tortie policy trace shop/a shop/b --protocol icmp --icmp 8 -o json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := trace.Query{Src: args[0], Dst: args[1], IPVersion: ipVersion}
			var err error
			if q.Protocol, err = trace.ParseProtocol(proto); err != nil {
				return fmt.Errorf("--protocol: %w", err)
			}
			if err := q.SetPorts(port, srcPort, cmd.Flags().Changed("port")); err != nil {
				return err
			}
			if icmp != "" {
				if q.ICMPType, q.ICMPCode, err = parseICMP(icmp); err != nil {
					return fmt.Errorf("--icmp %q: %w", icmp, err)
				}
				if q.Protocol != calc.ProtoICMP && q.Protocol != calc.ProtoICMPv6 {
					return fmt.Errorf("--icmp needs --protocol icmp or icmpv6")
				}
			}
			if ipVersion != 0 && ipVersion != 4 && ipVersion != 6 {
				return fmt.Errorf("--ip-version %d: want 4 or 6", ipVersion)
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: want text or json", output)
			}
			c, ctx, done, err := g.session()
			if err != nil {
				return err
			}
			defer done()
			var rs []v3.Resource
			for _, kind := range trace.Kinds {
				k, _ := v3.KindByKind(kind)
				list, _, err := c.List(ctx, k, "")
				if err != nil {
					return err
				}
				rs = append(rs, list...)
			}
			res, err := trace.Run(rs, q)
			if err != nil {
				return err
			}
			if output == "json" {
				b, err := json.MarshalIndent(res, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(g.out, "%s\n", b)
				return err
			}
			return trace.Write(g.out, res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&proto, "protocol", "tcp", "TCP, UDP, SCTP, UDPLite, ICMP, ICMPv6 or a protocol number")
	f.IntVar(&port, "port", 0, "destination port (required for TCP, UDP, SCTP and UDPLite)")
	f.IntVar(&srcPort, "src-port", 40000, "source port")
	f.StringVar(&icmp, "icmp", "", "ICMP type and optional code: 8 or 3/4 (with --protocol icmp or icmpv6)")
	f.IntVar(&ipVersion, "ip-version", 0, "4 or 6: the family to use when both ends have addresses of both")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

// parseICMP reads TYPE or TYPE/CODE.
func parseICMP(s string) (typ, code uint8, err error) {
	t, c, hasCode := strings.Cut(s, "/")
	n, err := strconv.ParseUint(t, 10, 8)
	if err != nil {
		return 0, 0, fmt.Errorf("type %q is not a number 0-255", t)
	}
	typ = uint8(n)
	if hasCode {
		m, err := strconv.ParseUint(c, 10, 8)
		if err != nil {
			return 0, 0, fmt.Errorf("code %q is not a number 0-255", c)
		}
		code = uint8(m)
	}
	return typ, code, nil
}
