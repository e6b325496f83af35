package cni

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

var poolKind, _ = v3.KindByKind(v3.KindIPPool)

// resolvePools turns the ipam section's ipv4_pools and ipv6_pools into pool
// CIDRs for tortie's IPAM. An entry is an IPPool's CIDR or its name, as in
// Calico's plugin (which resolves names the same way, by the stored pools);
// each must name a stored, enabled pool of its list's family, or the ADD
// fails with an error naming the entry: Calico's IPAM refuses a requested
// pool that does not exist or is disabled too, and silently using the
// other pools of the list would put the workload somewhere the operator
// did not ask for.
//
// A pod's (or its namespace's) cni.projectcalico.org/ipv4pools and
// ipv6pools annotation replaces its family's list, as in Calico.
func (p *invocation) resolvePools() (v4, v6 []netip.Prefix, err error) {
	c := p.conf.IPAM
	list4, list6 := c.IPv4Pools, c.IPv6Pools
	from4, from6 := "ipam.ipv4_pools", "ipam.ipv6_pools"
	if r := p.podReq; r != nil {
		if r.pools4 != nil {
			list4, from4 = r.pools4, r.from4
		}
		if r.pools6 != nil {
			list6, from6 = r.pools6, r.from6
		}
	}
	if len(list4)+len(list6) == 0 {
		return nil, nil, nil
	}
	rs, _, err := p.cl.List(p.ctx, poolKind, "")
	if err != nil {
		return nil, nil, p.datastoreError("reading the IP pools named in the ipam section", err)
	}
	pools := make([]*v3.IPPool, 0, len(rs))
	for _, r := range rs {
		pools = append(pools, r.(*v3.IPPool))
	}
	for _, f := range []struct {
		from    string
		entries []string
		is4     bool
		out     *[]netip.Prefix
	}{{from4, list4, true, &v4}, {from6, list6, false, &v6}} {
		code := types.ErrInvalidNetworkConfig
		if !strings.HasPrefix(f.from, "ipam.") {
			code = CodePodAnnotation
		}
		for _, entry := range f.entries {
			cidr, msg := findPool(pools, entry, f.is4)
			if msg != "" {
				return nil, nil, newError(code, fmt.Sprintf("%s entry %q: %s", f.from, entry, msg), nil)
			}
			*f.out = append(*f.out, cidr)
		}
	}
	return v4, v6, nil
}

// findPool finds the pool an entry (a CIDR or a name) names, or says why
// it cannot be used.
func findPool(pools []*v3.IPPool, entry string, is4 bool) (netip.Prefix, string) {
	var found *v3.IPPool
	var cidr netip.Prefix
	if want, err := netip.ParsePrefix(entry); err == nil {
		want = want.Masked()
		for _, ipp := range pools {
			if c, err := netip.ParsePrefix(ipp.Spec.CIDR); err == nil && c.Masked() == want {
				found, cidr = ipp, want
			}
		}
		if found == nil {
			return netip.Prefix{}, "no IPPool has that CIDR"
		}
	} else {
		for _, ipp := range pools {
			if ipp.Name == entry {
				found = ipp
			}
		}
		if found == nil {
			return netip.Prefix{}, "no IPPool has that name (an entry is an IPPool's name or CIDR)"
		}
		c, err := netip.ParsePrefix(found.Spec.CIDR)
		if err != nil {
			return netip.Prefix{}, fmt.Sprintf("IPPool %s has an unusable CIDR %q", found.Name, found.Spec.CIDR)
		}
		cidr = c.Masked()
	}
	switch {
	case cidr.Addr().Is4() != is4:
		family := "IPv6"
		if cidr.Addr().Is4() {
			family = "IPv4"
		}
		return netip.Prefix{}, fmt.Sprintf("IPPool %s (%s) is %s", found.Name, cidr, family)
	case found.Spec.Disabled:
		return netip.Prefix{}, fmt.Sprintf("IPPool %s (%s) is disabled", found.Name, cidr)
	}
	return cidr, ""
}
