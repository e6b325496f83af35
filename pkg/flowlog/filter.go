package flowlog

import (
	"cmp"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/selector"
	"github.com/tortie/tortie/pkg/trace"
)

// Filter keeps the records that match every condition set. Each condition
// holds when either end of the flow satisfies it (namespace, workload,
// selector) or the flow itself does (policy, action, port, protocol).
type Filter struct {
	Namespace string
	// Workload is a workload endpoint's name or its pod's or workload's
	// name, a host endpoint's or a network set's name.
	Workload string
	Selector selector.Selector
	// Policy is a policy name ("ns/name" or "name", with or without
	// "tier/" in front) or "profile/NAME".
	Policy   string
	Action   calc.Action
	Port     uint16
	Protocol string
}

// Query parameters of a filter, for the HTTP API and the CLI.
var filterParams = []string{"namespace", "workload", "selector", "policy", "action", "port", "protocol"}

// ParseFilter reads a filter from query parameters. A bad value is an
// error that names the parameter and says what is wrong with it.
func ParseFilter(q url.Values) (Filter, error) {
	var f Filter
	for k := range q {
		if !slices.Contains(filterParams, k) && k != "follow" && k != "last" {
			return f, fmt.Errorf("unknown filter %q (known: %s)", k, strings.Join(filterParams, ", "))
		}
	}
	f.Namespace, f.Workload, f.Policy = q.Get("namespace"), q.Get("workload"), q.Get("policy")
	if s := q.Get("selector"); s != "" {
		sel, err := selector.Parse(s)
		if err != nil {
			return f, fmt.Errorf("selector %q: %w", s, err)
		}
		f.Selector = sel
	}
	switch a := strings.ToLower(q.Get("action")); a {
	case "":
	case "allow":
		f.Action = calc.Allow
	case "deny":
		f.Action = calc.Deny
	default:
		return f, fmt.Errorf("action %q: want allow or deny", q.Get("action"))
	}
	if s := q.Get("port"); s != "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return f, fmt.Errorf("port %q: want a number 1-65535", s)
		}
		f.Port = uint16(n)
	}
	if s := q.Get("protocol"); s != "" {
		p, err := trace.ParseProtocol(s)
		if err != nil {
			return f, err
		}
		f.Protocol = trace.ProtocolName(p)
	}
	return f, nil
}

// Values is the filter as query parameters (ParseFilter's input).
func (f Filter) Values() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("namespace", f.Namespace)
	set("workload", f.Workload)
	if f.Selector != nil {
		set("selector", f.Selector.String())
	}
	set("policy", f.Policy)
	set("action", strings.ToLower(string(f.Action)))
	if f.Port != 0 {
		set("port", strconv.Itoa(int(f.Port)))
	}
	set("protocol", f.Protocol)
	return q
}

// Match reports whether r passes the filter.
func (f Filter) Match(r *Record) bool {
	either := func(ok func(e *Endpoint) bool) bool { return ok(&r.Src) || ok(&r.Dst) }
	if f.Namespace != "" && !either(func(e *Endpoint) bool { return e.Namespace == f.Namespace }) {
		return false
	}
	if f.Workload != "" && !either(func(e *Endpoint) bool { return e.Name == f.Workload || e.Workload == f.Workload }) {
		return false
	}
	if f.Selector != nil && !either(func(e *Endpoint) bool { return e.Kind != "" && f.Selector.Evaluate(e.Labels) }) {
		return false
	}
	if f.Policy != "" && !policyMatches(f.Policy, r) {
		return false
	}
	if f.Action != "" && r.Action != f.Action {
		return false
	}
	if f.Port != 0 && r.Dst.Port != f.Port {
		return false
	}
	if f.Protocol != "" && r.Protocol != f.Protocol {
		return false
	}
	return true
}

func policyMatches(want string, r *Record) bool {
	d := r.Decision
	switch {
	case d.Policy != "" && (want == d.Policy || want == d.Tier+"/"+d.Policy):
		return true
	case d.Profile != "" && want == "profile/"+d.Profile:
		return true
	case d.Kind == "tier default" && want == d.Tier:
		return true
	}
	return false
}

// sortRecords orders records by start, then by what they are about, so
// that output does not depend on map order.
func sortRecords(rs []Record) {
	slices.SortStableFunc(rs, func(a, b Record) int {
		return cmp.Or(a.Start.Compare(b.Start), a.Src.Addr.Compare(b.Src.Addr), a.Dst.Addr.Compare(b.Dst.Addr),
			cmp.Compare(a.Dst.Port, b.Dst.Port), cmp.Compare(a.Direction, b.Direction))
	})
}
