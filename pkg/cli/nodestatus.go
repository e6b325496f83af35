package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tortie/tortie/pkg/nodestatus"
)

func newNodeCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Commands about the tortie-node agent on this host",
	}
	cmd.AddCommand(newNodeStatusCommand(g))
	return cmd
}

func newNodeStatusCommand(g *globals) *cobra.Command {
	var addr string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether tortie-node runs here and the state of its BGP sessions",
		Long: `Ask the tortie-node agent on this host (not the datastore) for its routing
status, and print it as calicoctl node status does: one table of BGP peers
per address family. The agent serves it over HTTP on loopback at
` + nodestatus.StatusPath + ` (--agent-address, default ` + nodestatus.DefaultStatusAddr + `).
Exits 1 when the agent cannot be reached.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			st, err := fetchNodeStatus(ctx, addr)
			if err != nil {
				return err
			}
			printNodeStatus(g.out, st, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "agent-address", nodestatus.DefaultStatusAddr, "host:port where tortie-node serves its status")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up on the agent after this long")
	return cmd
}

func fetchNodeStatus(ctx context.Context, addr string) (*nodestatus.Status, error) {
	url := "http://" + addr + nodestatus.StatusPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tortie-node is not running: cannot reach the agent at %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("tortie-node at %s answered %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	var st nodestatus.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("tortie-node at %s: unreadable status: %w", url, err)
	}
	return &st, nil
}

// printNodeStatus prints st the way calicoctl node status prints BIRD's
// view: STATE is BIRD's protocol state ("up" when Established, "start"
// otherwise), INFO the BGP state and why a session is not up, SINCE the
// time of day of the last change (the date when older than today).
//
// Before the tables, when routing is not ready, why: the last apply's error
// (LastError, which keeps the agent not ready: an IP pool asking for an
// encapsulation this host cannot do, a device that cannot be made), one
// line a cause.
func printNodeStatus(w io.Writer, st *nodestatus.Status, now time.Time) {
	fmt.Fprintln(w, "tortie-node is running.")
	switch {
	case st.LastError != "":
		fmt.Fprintln(w, "\nRouting is not ready: its last apply failed:")
		for _, line := range strings.Split(strings.TrimSpace(st.LastError), "\n") {
			fmt.Fprintf(w, "  - %s\n", line)
		}
	case !st.Ready:
		fmt.Fprintln(w, "\nRouting is not ready: not programmed yet.")
	}
	if !st.BGPEnabled && st.BGPDisabledReason != "" {
		fmt.Fprintf(w, "\nBGP is not running: %s\n", st.BGPDisabledReason)
	}
	for _, fam := range []string{nodestatus.FamilyIPv4, nodestatus.FamilyIPv6} {
		fmt.Fprintf(w, "\n%s BGP status\n", fam)
		peers := st.PeersByFamily(fam)
		if len(peers) == 0 {
			fmt.Fprintf(w, "No %s peers found.\n", fam)
			continue
		}
		rows := make([][]string, 0, len(peers))
		for _, p := range peers {
			state, info := "start", p.State
			if p.State == "Established" {
				state = "up"
			}
			if p.Info != "" && p.State != "Established" {
				info += " " + p.Info
			}
			rows = append(rows, []string{p.Address, p.Type, state, sinceString(p.Since, now), info})
		}
		writeBoxTable(w, []string{"PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"}, rows)
	}
	if st.WorkloadMTU > 0 {
		fmt.Fprintf(w, "\nWorkload MTU %d (host %d), kept in %s for the CNI plugin\n", st.WorkloadMTU, st.HostMTU, st.MTUFile)
	}
	if st.Wireguard != nil {
		printWireguard(w, st.Wireguard, now)
	}
	if len(st.Warnings) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, m := range st.Warnings {
			fmt.Fprintf(w, "  - %s\n", m)
		}
	}
	fmt.Fprintln(w)
}

// printWireguard prints the WireGuard device and one row a peer, as `wg
// show` reports them, with the peer's node.
func printWireguard(w io.Writer, wg *nodestatus.WireguardStatus, now time.Time) {
	kind := wg.Kind
	if kind == "" {
		kind = "no"
	}
	fmt.Fprintf(w, "\nWireGuard: %s device %s", kind, wg.Device)
	if wg.ListenPort != 0 {
		fmt.Fprintf(w, ", port %d", wg.ListenPort)
	}
	if wg.Addr != "" {
		fmt.Fprintf(w, ", address %s", wg.Addr)
	}
	if wg.MTU != 0 {
		fmt.Fprintf(w, ", MTU %d", wg.MTU)
	}
	fmt.Fprintln(w)
	if wg.PublicKey != "" {
		fmt.Fprintf(w, "public key %s\n", wg.PublicKey)
	}
	if wg.Error != "" {
		fmt.Fprintf(w, "error: %s\n", wg.Error)
	}
	if len(wg.Peers) == 0 {
		fmt.Fprintln(w, "No WireGuard peers.")
	} else {
		rows := make([][]string, 0, len(wg.Peers))
		for _, p := range wg.Peers {
			allowed := strings.Join(p.AllowedIPs, ",")
			if len(p.AllowedIPs) > 3 {
				allowed = fmt.Sprintf("%s (+%d more)", strings.Join(p.AllowedIPs[:3], ","), len(p.AllowedIPs)-3)
			}
			hs := "never"
			if !p.LatestHandshake.IsZero() {
				hs = now.Sub(p.LatestHandshake).Round(time.Second).String() + " ago"
			}
			node := p.Node
			if node == "" {
				node = "(unknown) " + p.PublicKey
			}
			rows = append(rows, []string{node, p.Endpoint, allowed, hs, byteString(p.ReceivedBytes), byteString(p.SentBytes)})
		}
		writeBoxTable(w, []string{"NODE", "ENDPOINT", "ALLOWED IPS", "LATEST HANDSHAKE", "RECEIVED", "SENT"}, rows)
	}
	if len(wg.Unencrypted) > 0 {
		fmt.Fprintln(w, "Reached unencrypted:")
		for _, m := range wg.Unencrypted {
			fmt.Fprintf(w, "  - %s\n", m)
		}
	}
}

// byteString is n bytes as `wg show` writes transfer counts.
func byteString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), 0
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.2f %ciB", f, "KMGT"[i-1])
}

func sinceString(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	t = t.In(now.Location())
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02")
}

// writeBoxTable draws the boxed table calicoctl draws: headers centred,
// cells left-aligned, one space of padding.
func writeBoxTable(w io.Writer, header []string, rows [][]string) {
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	var sep strings.Builder
	sep.WriteByte('+')
	for _, wd := range width {
		sep.WriteString(strings.Repeat("-", wd+2))
		sep.WriteByte('+')
	}
	line := sep.String()
	fmt.Fprintln(w, line)
	var b strings.Builder
	b.WriteByte('|')
	for i, h := range header {
		gap := width[i] - len(h)
		left := gap / 2
		b.WriteString(" " + strings.Repeat(" ", left) + h + strings.Repeat(" ", gap-left) + " |")
	}
	fmt.Fprintln(w, b.String())
	fmt.Fprintln(w, line)
	for _, r := range rows {
		b.Reset()
		b.WriteByte('|')
		for i, c := range r {
			b.WriteString(" " + c + strings.Repeat(" ", width[i]-len(c)) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	fmt.Fprintln(w, line)
}
