package wireguard

import (
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
)

// Rule is the routing rule that sends traffic into the WireGuard routing
// table, as Calico's: "not fwmark Mark/Mark lookup Table", at Priority. The
// device marks its own encrypted packets with Mark (Config.FirewallMark),
// so they skip the table and leave by the underlay; everything else
// consults the table first, and what the table does not route (or throws)
// goes on to the main table.
type Rule struct {
	Priority int
	Table    int
	Mark     int
}

func (r Rule) netlink(family int) *netlink.Rule {
	nr := netlink.NewRule()
	mask := uint32(r.Mark)
	nr.Family, nr.Priority, nr.Table = family, r.Priority, r.Table
	nr.Mark, nr.Mask, nr.Invert = uint32(r.Mark), &mask, true
	return nr
}

func (r Rule) String() string {
	return fmt.Sprintf("priority %d: not fwmark %#x/%#x lookup %d", r.Priority, r.Mark, r.Mark, r.Table)
}

// ours says whether a kernel rule is one of this kind for table and mark,
// whatever its priority.
func ours(k netlink.Rule, table, mark int) bool {
	return k.Table == table && k.Invert && k.Mark == uint32(mark) && k.Mask != nil && *k.Mask == uint32(mark) &&
		k.Src == nil && k.Dst == nil && k.IifName == "" && k.OifName == "" && k.Goto <= 0
}

// EnsureRule makes r the one rule of its kind (family netlink.FAMILY_V4 or
// FAMILY_V6): it is added if missing, and rules for the same table and
// mark at another priority (a changed wireguardRoutingRulePriority) are
// deleted. It says whether it changed anything.
func EnsureRule(h *netlink.Handle, r Rule, family int, log *slog.Logger) (bool, error) {
	rules, err := h.RuleList(family)
	if err != nil {
		return false, fmt.Errorf("wireguard rule: listing rules: %w", err)
	}
	changed, have := false, false
	for _, k := range rules {
		if !ours(k, r.Table, r.Mark) {
			continue
		}
		if k.Priority == r.Priority && !have {
			have = true
			continue
		}
		if err := h.RuleDel(&k); err != nil {
			return changed, fmt.Errorf("wireguard rule: deleting the one at priority %d: %w", k.Priority, err)
		}
		changed = true
		log.Info("wireguard routing rule deleted", "priority", k.Priority, "table", k.Table)
	}
	if have {
		return changed, nil
	}
	if err := h.RuleAdd(r.netlink(family)); err != nil {
		return changed, fmt.Errorf("wireguard rule %s: %w", r, err)
	}
	log.Info("wireguard routing rule added", "rule", r.String())
	return true, nil
}

// RemoveRules deletes every rule that sends traffic without mark to table
// (family netlink.FAMILY_V4 or FAMILY_V6), and says how many it deleted.
func RemoveRules(h *netlink.Handle, table, mark, family int, log *slog.Logger) (int, error) {
	rules, err := h.RuleList(family)
	if err != nil {
		return 0, fmt.Errorf("wireguard rule: listing rules: %w", err)
	}
	n := 0
	for _, k := range rules {
		if !ours(k, table, mark) {
			continue
		}
		if err := h.RuleDel(&k); err != nil {
			return n, fmt.Errorf("wireguard rule: deleting the one at priority %d: %w", k.Priority, err)
		}
		n++
		log.Info("wireguard routing rule deleted", "priority", k.Priority, "table", k.Table)
	}
	return n, nil
}
