package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/big"
	"math/rand"
	"net/netip"
	"strings"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/selector"
)

// pool is an IPPool as IPAM uses it.
type pool struct {
	name      string
	cidr      netip.Prefix
	blockBits int // the pool's blockSize: prefix length of its blocks
	disabled  bool
	selector  selector.Selector // nil: all()
	manual    bool              // assignmentMode Manual
	uses      []v3.IPPoolAllowedUse
}

func (p *pool) String() string { return fmt.Sprintf("%s (%s)", p.name, p.cidr) }

func (p *pool) numBlocks() *big.Int {
	return new(big.Int).Lsh(big.NewInt(1), uint(p.blockBits-p.cidr.Bits()))
}

// blockFor is the block of this pool that holds a.
func (p *pool) blockFor(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, p.blockBits).Masked()
}

func (p *pool) allows(use v3.IPPoolAllowedUse) bool {
	if len(p.uses) == 0 {
		return use == v3.AllowedUseWorkload || use == v3.AllowedUseTunnel
	}
	for _, u := range p.uses {
		if u == use {
			return true
		}
	}
	return false
}

// edge reports whether a is the first or last address of the pool, which
// are never handed out (pools of 1 or 2 addresses excepted).
func (p *pool) edge(a netip.Addr) bool {
	if p.cidr.Addr().BitLen()-p.cidr.Bits() < 2 {
		return false
	}
	if a == p.cidr.Addr() {
		return true
	}
	return a == lastAddr(p.cidr)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	host := p.Addr().BitLen() - p.Bits()
	for i := 15; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	r := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		return r.Unmap()
	}
	return r
}

// view is what one allocation reads besides blocks: the pools and
// reservations, and, when needed, the IPAM config and the node's labels.
type view struct {
	read         time.Time
	pools        []*pool
	reservations []netip.Prefix
}

// poolsKeyPrefix covers ippools, ipreservations (and ipamconfigurations):
// one range read returns every pool and every reservation at one revision.
var poolsKeyPrefix = strings.TrimSuffix(client.KindPrefix(kindOf(v3.KindIPPool), ""), "pools/")

func kindOf(kind string) *v3.KindInfo {
	k, ok := v3.KindByKind(kind)
	if !ok {
		panic("ipam: unknown kind " + kind)
	}
	return k
}

func (a *IPAM) readView(ctx context.Context) (*view, error) {
	a.mu.Lock()
	v := a.view
	a.mu.Unlock()
	if v != nil && a.opts.ViewTTL > 0 && a.now().Sub(v.read) < a.opts.ViewTTL {
		return v, nil
	}
	kvs, _, err := a.be.List(ctx, poolsKeyPrefix)
	if err != nil {
		return nil, fmt.Errorf("reading IP pools: %w", err)
	}
	poolPfx := client.KindPrefix(kindOf(v3.KindIPPool), "")
	resPfx := client.KindPrefix(kindOf(v3.KindIPReservation), "")
	v = &view{read: a.now()}
	for _, kv := range kvs {
		switch {
		case strings.HasPrefix(kv.Key, poolPfx):
			var ipp v3.IPPool
			if err := json.Unmarshal(kv.Value, &ipp); err != nil {
				return nil, fmt.Errorf("IP pool at %s: %w", kv.Key, err)
			}
			p, err := toPool(&ipp)
			if err != nil {
				a.log.Warn("ignoring unusable IP pool", "pool", ipp.Name, "err", err)
				continue
			}
			v.pools = append(v.pools, p)
		case strings.HasPrefix(kv.Key, resPfx):
			var r v3.IPReservation
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				return nil, fmt.Errorf("IP reservation at %s: %w", kv.Key, err)
			}
			for _, c := range r.Spec.ReservedCIDRs {
				if p, err := parseCIDROrIP(c); err == nil {
					v.reservations = append(v.reservations, p)
				} else {
					a.log.Warn("ignoring bad reserved CIDR", "reservation", r.Name, "cidr", c)
				}
			}
		}
	}
	a.mu.Lock()
	a.view = v
	a.mu.Unlock()
	return v, nil
}

func toPool(ipp *v3.IPPool) (*pool, error) {
	c, err := netip.ParsePrefix(ipp.Spec.CIDR)
	if err != nil {
		return nil, err
	}
	p := &pool{name: ipp.Name, cidr: c.Masked(), disabled: ipp.Spec.Disabled, uses: ipp.Spec.AllowedUses, blockBits: ipp.Spec.BlockSize}
	if p.blockBits == 0 {
		p.blockBits = v3.DefaultBlockSizeV4
		if c.Addr().Is6() {
			p.blockBits = v3.DefaultBlockSizeV6
		}
	}
	if p.blockBits < p.cidr.Bits() || p.blockBits > c.Addr().BitLen() || c.Addr().BitLen()-p.blockBits > 12 {
		return nil, fmt.Errorf("blockSize %d does not fit CIDR %s", p.blockBits, c)
	}
	if m := ipp.Spec.AssignmentMode; m != nil && *m == v3.AssignmentManual {
		p.manual = true
	}
	if s := strings.TrimSpace(ipp.Spec.NodeSelector); s != "" && s != "all()" {
		sel, err := selector.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("nodeSelector: %w", err)
		}
		p.selector = sel
	}
	return p, nil
}

func parseCIDROrIP(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// poolFor returns the pool containing a (disabled ones included).
func (v *view) poolFor(a netip.Addr) *pool {
	for _, p := range v.pools {
		if p.cidr.Contains(a) {
			return p
		}
	}
	return nil
}

func (v *view) reserved(a netip.Addr) bool {
	for _, r := range v.reservations {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// wholeReserved reports whether every address of blk is reserved.
func (v *view) wholeReserved(blk netip.Prefix) bool {
	for _, r := range v.reservations {
		if r.Bits() <= blk.Bits() && r.Contains(blk.Addr()) {
			return true
		}
	}
	return false
}

// usable is the filter for new allocations in pool p.
func (v *view) usable(p *pool) func(netip.Addr) bool {
	return func(a netip.Addr) bool { return !p.edge(a) && !v.reserved(a) }
}

// nodeLabels reads a node's labels. A node that does not exist has none
// (a CNI call may come before the node agent registered it).
func (a *IPAM) nodeLabels(ctx context.Context, node string) (map[string]string, error) {
	r, err := a.c.Get(ctx, kindOf(v3.KindNode), "", node)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return r.GetLabels(), nil
}

// candidatePools picks the pools one AutoAssign may use for a version, in
// order, and says why the others were left out when none remain.
func (a *IPAM) candidatePools(ctx context.Context, v *view, version int, node string, requested []netip.Prefix, use v3.IPPoolAllowedUse) ([]*pool, error) {
	var labels map[string]string
	labelsRead := false
	var out []*pool
	var why []string
	for _, p := range v.pools {
		if ipVersion(p.cidr.Addr()) != version {
			continue
		}
		explicit := false
		if len(requested) > 0 {
			for _, r := range requested {
				if r == p.cidr {
					explicit = true
				}
			}
			if !explicit {
				continue
			}
		}
		switch {
		case p.disabled:
			why = append(why, p.String()+" is disabled")
			continue
		case !p.allows(use):
			why = append(why, fmt.Sprintf("%s does not allow use %s", p, use))
			continue
		case p.manual && !explicit:
			why = append(why, p.String()+" has assignmentMode Manual")
			continue
		}
		if p.selector != nil && !explicit {
			if !labelsRead {
				var err error
				if labels, err = a.nodeLabels(ctx, node); err != nil {
					return nil, err
				}
				labelsRead = true
			}
			if !p.selector.Evaluate(labels) {
				why = append(why, fmt.Sprintf("%s: nodeSelector %q does not match node %s", p, p.selector.String(), node))
				continue
			}
		}
		out = append(out, p)
	}
	for _, r := range requested {
		if ipVersion(r.Addr()) != version {
			continue
		}
		found := false
		for _, p := range v.pools {
			found = found || p.cidr == r
		}
		if !found {
			return nil, fmt.Errorf("requested pool %s does not exist", r)
		}
	}
	if len(out) == 0 {
		msg := fmt.Sprintf("no IPv%d pool is usable by node %s", version, node)
		if len(why) > 0 {
			msg += ": " + strings.Join(why, "; ")
		} else {
			msg += ": there are no IPv" + fmt.Sprint(version) + " pools"
		}
		return nil, fmt.Errorf("%w: %s", ErrNoPools, msg)
	}
	return out, nil
}

// blockGenerator walks a pool's blocks as Calico does: from a start block
// chosen by math/rand seeded with the FNV-1 32-bit hash of the hostname,
// upward with wrap-around, every block once. (Calico seeds /32 and /128
// blocks by time instead; so does this.)
func blockGenerator(p *pool, host string, now time.Time) func() (netip.Prefix, bool) {
	numBlocks := p.numBlocks()
	var seed int64
	if p.blockBits == p.cidr.Addr().BitLen() {
		seed = now.UnixNano()
	} else {
		h := fnv.New32()
		h.Write([]byte(host))
		seed = int64(h.Sum32())
	}
	r := rand.New(rand.NewSource(seed))
	i := new(big.Int).Rand(r, numBlocks)
	returned := new(big.Int)
	one := big.NewInt(1)
	base := new(big.Int).SetBytes(p.cidr.Addr().AsSlice())
	shift := uint(p.cidr.Addr().BitLen() - p.blockBits)
	last := new(big.Int).Sub(numBlocks, one)
	return func() (netip.Prefix, bool) {
		if returned.Cmp(numBlocks) >= 0 {
			return netip.Prefix{}, false
		}
		returned.Add(returned, one)
		ip := new(big.Int).Add(base, new(big.Int).Lsh(i, shift))
		if i.Cmp(last) >= 0 {
			i.SetInt64(0)
		} else {
			i.Add(i, one)
		}
		buf := make([]byte, p.cidr.Addr().BitLen()/8)
		ip.FillBytes(buf)
		addr, _ := netip.AddrFromSlice(buf)
		return netip.PrefixFrom(addr, p.blockBits), true
	}
}
