package cli

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tortie/tortie/pkg/ipam"
)

func newIPAMCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ipam",
		Short: "IP address management: show, check, release, configure",
		Long: `IP address management, as calicoctl ipam: show usage per pool and block,
find addresses nobody uses (check), release one, and set the IPAM configuration.`,
	}
	cmd.AddCommand(newIPAMShowCommand(g), newIPAMCheckCommand(g), newIPAMReleaseCommand(g), newIPAMConfigureCommand(g))
	return cmd
}

// openIPAM connects and returns an IPAM client.
func (g *globals) openIPAM() (*ipam.IPAM, func(), error) {
	c, closeFn, err := g.connect()
	if err != nil {
		return nil, nil, err
	}
	return ipam.New(c.Backend(), ipam.Options{}), closeFn, nil
}

func newIPAMShowCommand(g *globals) *cobra.Command {
	var (
		ip         string
		showBlocks bool
		showConfig bool
	)
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show IP usage per pool (and block), or who holds one address",
		Long: `Show how many addresses each IP pool has in use, as calicoctl ipam show does:
total, in use, reserved (by IPReservations, in use or not), free (neither in
use nor reserved) and cooling (released, not yet reusable: always 0, as
tortie reuses a released address at once). --show-blocks adds a row per block; --ip reports whether one address is in use
and by which handle; --show-configuration prints the IPAM configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeFn, err := g.connect()
			if err != nil {
				return err
			}
			defer closeFn()
			a := ipam.New(c.Backend(), ipam.Options{})
			ctx, cancel := g.context()
			defer cancel()
			switch {
			case ip != "":
				addr, err := netip.ParseAddr(ip)
				if err != nil {
					return fmt.Errorf("invalid IP address %q", ip)
				}
				info, err := a.Lookup(ctx, addr)
				if err != nil {
					return err
				}
				printAllocation(g.out, addr, info)
				return nil
			case showConfig:
				cfg, err := a.Config(ctx)
				if err != nil {
					return err
				}
				renderTable(g.out, []string{"PROPERTY", "VALUE"}, [][]string{
					{"StrictAffinity", strconv.FormatBool(cfg.StrictAffinity)},
					{"AutoAllocateBlocks", strconv.FormatBool(cfg.AutoAllocateBlocks)},
					{"MaxBlocksPerHost", strconv.Itoa(cfg.MaxBlocksPerHost)},
				})
				return nil
			}
			usage, err := a.Usage(ctx)
			if err != nil {
				return err
			}
			rows, err := usageRows(ctx, c, usage, showBlocks)
			if err != nil {
				return err
			}
			// calicoctl's table (go-pretty): headings left, counts right.
			renderTableAligned(g.out, usageHeader, rows, leftHeadings, rightFrom(2))
			return nil
		},
	}
	cmd.Flags().StringVar(&ip, "ip", "", "report whether this address is in use, and by whom")
	cmd.Flags().BoolVar(&showBlocks, "show-blocks", false, "show a row per block as well as per pool")
	cmd.Flags().BoolVar(&showConfig, "show-configuration", false, "show the IPAM configuration")
	return cmd
}

func printAllocation(w io.Writer, addr netip.Addr, info *ipam.AllocationInfo) {
	if info == nil {
		fmt.Fprintf(w, "%s is not assigned\n", addr)
		return
	}
	fmt.Fprintf(w, "IP %s is in use\n", addr)
	if info.Handle != "" {
		fmt.Fprintf(w, "Handle ID: %s\n", info.Handle)
	} else {
		fmt.Fprintln(w, "Handle ID: <none>")
	}
	if len(info.Attrs) == 0 {
		fmt.Fprintln(w, "No Active Owner attributes defined")
		return
	}
	fmt.Fprintln(w, "Active Owner Attributes:")
	keys := make([]string, 0, len(info.Attrs))
	for k := range info.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %s\n", k, info.Attrs[k])
	}
}

// errProblemsFound makes `ipam check` exit 1 after printing its report.
var errProblemsFound = errors.New("IPAM check found problems")

func newIPAMCheckCommand(g *globals) *cobra.Command {
	var (
		release bool
		grace   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Find leaked addresses and inconsistent IPAM data (exit status 1 if any)",
		Long: `Check IPAM against the workload endpoints and nodes that use addresses.

An allocated address is leaked when no WorkloadEndpoint lists it in ipNetworks
and no Node uses it as a tunnel address. Also reported: blocks of nodes that no
longer exist, affinities that are pending or do not match their block, handles
that disagree with the blocks, and addresses in use but not allocated.

Exit status 0 when nothing is found, 1 when something is reported.
--release-leaks then repairs: leaked addresses at least --grace-period old are
released (each only if it is still held by the same handle and allocation),
blocks of departed nodes are let go, affinities and handles are fixed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, closeFn, err := g.openIPAM()
			if err != nil {
				return err
			}
			defer closeFn()
			ctx, cancel := g.context()
			defer cancel()
			rep, err := a.Check(ctx)
			if err != nil {
				return err
			}
			printReport(g.out, rep, time.Now())
			if release && rep.Problems() > 0 {
				res, err := a.ReleaseLeaks(ctx, rep, grace)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.out, "\nReleased %d leaked IPs (%d younger than %v or of unknown age kept, %d changed since the check).\n",
					res.ReleasedIPs, res.SkippedYoung, grace, res.Changed)
				fmt.Fprintf(g.out, "Released the blocks of %d departed nodes; fixed %d affinities and %d handles.\n",
					res.ReleasedNodes, res.FixedAffinities, res.FixedHandles)
				for _, e := range res.Errors {
					fmt.Fprintf(g.out, "  error: %v\n", e)
				}
			}
			if n := rep.Problems(); n > 0 {
				return fmt.Errorf("%w: %d", errProblemsFound, n)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&release, "release-leaks", false, "release leaked addresses older than --grace-period and repair the rest")
	cmd.Flags().DurationVar(&grace, "grace-period", ipam.DefaultLeakGracePeriod, "how old a leaked address must be before --release-leaks frees it")
	return cmd
}

func printReport(w io.Writer, r *ipam.Report, now time.Time) {
	fmt.Fprintln(w, "Checking IPAM for inconsistencies...")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Found %d IPAM blocks recording %d allocations; %d handles.\n", r.Blocks, r.Allocations, r.Handles)
	fmt.Fprintf(w, "Workloads and nodes are using %d of the allocated IPs.\n", r.InUse)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Found %d IPs that are allocated in IPAM but not actually in use.\n", len(r.Leaks))
	for _, l := range r.Leaks {
		age := "unknown age"
		if !l.Allocated.IsZero() {
			age = "allocated " + now.Sub(l.Allocated).Truncate(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "  %s leaked; handle %s, %s, attrs %s\n", l.Addr, l.Handle, age, formatAttrs(l.Attrs))
	}
	fmt.Fprintf(w, "Found %d in-use IPs that are in active IP pools but have no corresponding IPAM allocation.\n", len(r.Unallocated))
	for _, u := range r.Unallocated {
		fmt.Fprintf(w, "  %s in use by %s\n", u.Addr, u.Owner)
	}
	fmt.Fprintf(w, "Found %d blocks of nodes that no longer exist.\n", len(r.OrphanBlocks))
	for _, b := range r.OrphanBlocks {
		fmt.Fprintf(w, "  %s of node %s (%d IPs in use)\n", b.Block, b.Node, b.InUse)
	}
	fmt.Fprintf(w, "Found %d block affinities that do not match their block.\n", len(r.AffinityProblems))
	for _, p := range r.AffinityProblems {
		state, block := p.State, "no block"
		if state == "" {
			state = "missing"
		}
		if p.BlockExists {
			block = "block affine to " + strconv.Quote(p.BlockOwner)
		}
		fmt.Fprintf(w, "  node %s, %s: affinity %s, %s\n", p.Node, p.Block, state, block)
	}
	fmt.Fprintf(w, "Found %d handles that disagree with the blocks.\n", len(r.HandleProblems))
	for _, p := range r.HandleProblems {
		fmt.Fprintf(w, "  %s: handle says %v, blocks hold %v\n", p.Handle, p.Stored, p.Actual)
	}
	if len(r.Duplicates) > 0 {
		fmt.Fprintf(w, "Found %d IPs allocated in more than one block: %v\n", len(r.Duplicates), r.Duplicates)
	}
	fmt.Fprintf(w, "Check complete; found %d problems.\n", r.Problems())
}

func formatAttrs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func newIPAMReleaseCommand(g *globals) *cobra.Command {
	var ip string
	cmd := &cobra.Command{
		Use:   "release --ip IP",
		Short: "Release one address",
		Long: `Release an address from IPAM, whoever holds it. This does not remove it from
any endpoint still using it: use it to clean up after endpoints that were not
removed cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ip == "" {
				return errors.New("--ip is required")
			}
			addr, err := netip.ParseAddr(ip)
			if err != nil {
				return fmt.Errorf("invalid IP address %q", ip)
			}
			a, closeFn, err := g.openIPAM()
			if err != nil {
				return err
			}
			defer closeFn()
			ctx, cancel := g.context()
			defer cancel()
			un, err := a.ReleaseIPs(ctx, ipam.ReleaseOptions{Address: addr})
			if err != nil {
				return err
			}
			if len(un) > 0 {
				return fmt.Errorf("IP address %s is not assigned", addr)
			}
			fmt.Fprintf(g.out, "Successfully released IP address %s\n", addr)
			return nil
		},
	}
	cmd.Flags().StringVar(&ip, "ip", "", "address to release")
	return cmd
}

func newIPAMConfigureCommand(g *globals) *cobra.Command {
	var (
		strict    string
		maxBlocks string
	)
	cmd := &cobra.Command{
		Use:   "configure --strictaffinity=true|false [--max-blocks-per-host N]",
		Short: "Set the IPAM configuration",
		Long: `Set the IPAM configuration (stored at /calico/ipam/v2/config).
--strictaffinity=true forbids nodes to borrow addresses from other nodes' blocks;
--max-blocks-per-host caps the blocks a node may claim (0: no limit).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var strictVal *bool
			if strict != "" {
				v, err := strconv.ParseBool(strict)
				if err != nil {
					return errors.New("invalid value. Use true or false to set strictaffinity")
				}
				strictVal = &v
			}
			var maxVal *int
			if maxBlocks != "" {
				v, err := strconv.ParseInt(maxBlocks, 10, 32)
				if err != nil || v < 0 {
					return errors.New("invalid value for max-blocks-per-host. Use a number, 0 for no limit")
				}
				n := int(v)
				maxVal = &n
			}
			if strictVal == nil && maxVal == nil {
				return errors.New("at least one configuration option must be specified")
			}
			a, closeFn, err := g.openIPAM()
			if err != nil {
				return err
			}
			defer closeFn()
			ctx, cancel := g.context()
			defer cancel()
			if _, err := a.UpdateConfig(ctx, func(c *ipam.Config) {
				if strictVal != nil {
					c.StrictAffinity = *strictVal
				}
				if maxVal != nil {
					c.MaxBlocksPerHost = *maxVal
				}
			}); err != nil {
				return err
			}
			if strictVal != nil {
				fmt.Fprintln(g.out, "Successfully set StrictAffinity to:", *strictVal)
			}
			if maxVal != nil {
				fmt.Fprintln(g.out, "Successfully set MaxBlocksPerHost to:", *maxVal)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&strict, "strictaffinity", "", "true or false")
	cmd.Flags().StringVar(&maxBlocks, "max-blocks-per-host", "", "the most blocks one node may claim (0: no limit)")
	return cmd
}

// numericCell is what calicoctl's table writer right-aligns.
var numericCell = regexp.MustCompile(`^-?\d+\.?\d*$`)

// renderTable draws a table as calicoctl's (olekukonko/tablewriter
// defaults): borders, centred headers, numbers right-aligned.
func renderTable(w io.Writer, header []string, rows [][]string) {
	renderTableAligned(w, header, rows, centredHeadings, func(_ int, cell string) bool { return numericCell.MatchString(cell) })
}

// How a table's headings sit: centred (tablewriter) or left (go-pretty).
const (
	centredHeadings = iota
	leftHeadings
)

// rightFrom right-aligns every column from the i-th on.
func rightFrom(i int) func(int, string) bool {
	return func(col int, _ string) bool { return col >= i }
}

// renderTableAligned draws a bordered table; right says which cells are
// right-aligned, the others are left-aligned.
func renderTableAligned(w io.Writer, header []string, rows [][]string, headings int, right func(col int, cell string) bool) {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	line := "+"
	for _, wd := range widths {
		line += strings.Repeat("-", wd+2) + "+"
	}
	fmt.Fprintln(w, line)
	var b strings.Builder
	b.WriteString("|")
	for i, h := range header {
		gap := widths[i] - len(h)
		left := 0
		if headings == centredHeadings {
			left = gap / 2
		}
		b.WriteString(" " + strings.Repeat(" ", left) + h + strings.Repeat(" ", gap-left) + " |")
	}
	fmt.Fprintln(w, b.String())
	fmt.Fprintln(w, line)
	for _, r := range rows {
		b.Reset()
		b.WriteString("|")
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-len(c))
			if right(i, c) {
				b.WriteString(" " + pad + c + " |")
			} else {
				b.WriteString(" " + c + pad + " |")
			}
		}
		fmt.Fprintln(w, b.String())
	}
	fmt.Fprintln(w, line)
}
