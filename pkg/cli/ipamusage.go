package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/ipam"
)

// usageCounts are one row of `ipam show`, in calicoctl's terms: Reserved
// is what IPReservations withhold, in use or not; InUseReserved the
// addresses both in use and reserved (allocated before the reservation);
// Cooling the released addresses not yet reusable, always 0: tortie's IPAM
// hands a released address out again at once.
type usageCounts struct {
	Total, InUse, Reserved, InUseReserved, Cooling float64
}

// Free is every address neither in use nor reserved.
func (u usageCounts) Free() float64 {
	return max(u.Total-u.Reserved-(u.InUse-u.InUseReserved), 0)
}

// row formats as calicoctl does: %.5g, and percentages of the total.
func (u usageCounts) row(grouping, cidr string) []string {
	pct := func(n float64) string { return fmt.Sprintf("%.5g (%.f%%)", n, 100*n/u.Total) }
	return []string{grouping, cidr, fmt.Sprintf("%.5g", u.Total), pct(u.InUse), pct(u.Reserved), pct(u.Free()), pct(u.Cooling)}
}

// usageHeader is calicoctl ipam show's table heading.
var usageHeader = []string{"GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS RESERVED", "IPS FREE", "IPS COOLING"}

// usageRows are the rows of `ipam show`: a pool's, then, with blocks, its
// blocks'; blocks in no pool have no pool row.
func usageRows(ctx context.Context, c *client.Client, usage []ipam.PoolUsage, showBlocks bool) ([][]string, error) {
	res, err := reservedPrefixes(ctx, c)
	if err != nil {
		return nil, err
	}
	var inUseReserved map[netip.Prefix]int
	if len(res) > 0 {
		if inUseReserved, err = allocatedReserved(ctx, c, res); err != nil {
			return nil, err
		}
	}
	var rows [][]string
	for _, pu := range usage {
		pool := usageCounts{Total: pu.Capacity, InUse: float64(pu.InUse), Reserved: reservedIn(pu.CIDR, res)}
		var blocks [][]string
		for _, b := range pu.Blocks {
			bu := usageCounts{Total: float64(b.Capacity), InUse: float64(b.InUse), Reserved: reservedIn(b.CIDR, res),
				InUseReserved: float64(inUseReserved[b.CIDR])}
			pool.InUseReserved += bu.InUseReserved
			blocks = append(blocks, bu.row("Block", b.CIDR.String()))
		}
		if pu.CIDR.IsValid() {
			rows = append(rows, pool.row("IP Pool", pu.CIDR.String()))
		}
		if showBlocks {
			rows = append(rows, blocks...)
		}
	}
	return rows, nil
}

// reservedPrefixes are the CIDRs of every IPReservation, disjoint: one
// inside another is dropped (two prefixes are disjoint or nested).
func reservedPrefixes(ctx context.Context, c *client.Client) ([]netip.Prefix, error) {
	k, _ := v3.KindByKind(v3.KindIPReservation)
	objs, _, err := c.List(ctx, k, "")
	if err != nil {
		return nil, fmt.Errorf("listing IP reservations: %w", err)
	}
	var all []netip.Prefix
	for _, o := range objs {
		for _, s := range o.(*v3.IPReservation).Spec.ReservedCIDRs {
			if p, fe := v3.ParseNet(v3.Path("spec.reservedCIDRs"), s); fe == nil {
				all = append(all, p)
			}
		}
	}
	return outermost(all), nil
}

// outermost drops the prefixes that lie within another of the list.
func outermost(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Bits() - b.Bits() })
	var out []netip.Prefix
	for _, p := range ps {
		if !slices.ContainsFunc(out, p.Overlaps) {
			out = append(out, p)
		}
	}
	return out
}

// reservedIn counts the addresses of p that the (disjoint) reservations
// cover.
func reservedIn(p netip.Prefix, res []netip.Prefix) float64 {
	if !p.IsValid() {
		return 0
	}
	var n float64
	for _, r := range res {
		switch {
		case !r.Overlaps(p):
		case r.Bits() <= p.Bits():
			return size(p) // p lies within r
		default:
			n += size(r)
		}
	}
	return n
}

func size(p netip.Prefix) float64 { return math.Pow(2, float64(p.Addr().BitLen()-p.Bits())) }

// blocksPrefix is where Calico keeps IPAM blocks (libcalico-go's BlockKey):
// /calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26.
const blocksPrefix = "/calico/ipam/v2/assignment/ipv%d/block/"

// allocatedReserved counts, per block, the allocated addresses that a
// reservation covers. It reads the blocks' allocations themselves, which
// ipam.Usage does not report (ipam.BlockUsage is the better home for this
// count).
func allocatedReserved(ctx context.Context, c *client.Client, res []netip.Prefix) (map[netip.Prefix]int, error) {
	out := map[netip.Prefix]int{}
	for _, version := range []int{4, 6} {
		kvs, _, err := c.Backend().List(ctx, fmt.Sprintf(blocksPrefix, version))
		if err != nil {
			return nil, fmt.Errorf("listing IPAM blocks: %w", err)
		}
		for _, kv := range kvs {
			var b struct {
				CIDR        string `json:"cidr"`
				Allocations []*int `json:"allocations"`
			}
			if json.Unmarshal(kv.Value, &b) != nil {
				continue
			}
			p, err := netip.ParsePrefix(b.CIDR)
			if err != nil || reservedIn(p, res) == 0 {
				continue
			}
			addr := p.Addr()
			for _, a := range b.Allocations {
				if a != nil && slices.ContainsFunc(res, func(r netip.Prefix) bool { return r.Contains(addr) }) {
					out[p]++
				}
				addr = addr.Next()
			}
		}
	}
	return out, nil
}
