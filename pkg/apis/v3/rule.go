package v3

import (
	"math"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
	"github.com/tortie/tortie/pkg/selector"
)

// Action is what a rule does with a packet it matches.
type Action string

const (
	// Allow accepts the packet and stops evaluation.
	Allow Action = "Allow"
	// Deny drops the packet.
	Deny Action = "Deny"
	// Log logs the packet and carries on with the next rule.
	Log Action = "Log"
	// Pass skips the rest of the tier and goes to the next tier.
	Pass Action = "Pass"
)

// Rule is one match-and-action entry of a policy's or profile's ingress or
// egress list. All the match criteria of a rule must hold for it to match.
type Rule struct {
	Action Action `json:"action"`
	// IPVersion, when set (4 or 6), restricts the rule to that IP version.
	IPVersion *int `json:"ipVersion,omitempty"`
	// Protocol restricts the rule to one IP protocol; it is required for
	// ports.
	Protocol    *numorstring.Protocol `json:"protocol,omitempty"`
	ICMP        *ICMPFields           `json:"icmp,omitempty"`
	NotProtocol *numorstring.Protocol `json:"notProtocol,omitempty"`
	NotICMP     *ICMPFields           `json:"notICMP,omitempty"`
	// Source and Destination are omitted from JSON when empty (Calico's
	// `omitzero`), so a stored rule carries only what was written.
	Source      EntityRule    `json:"source,omitzero"`
	Destination EntityRule    `json:"destination,omitzero"`
	HTTP        *HTTPMatch    `json:"http,omitempty"`
	Metadata    *RuleMetadata `json:"metadata,omitempty"`
}

// HTTPPath matches an HTTP request path exactly or by prefix; exactly one of
// the two is set.
type HTTPPath struct {
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
}

// HTTPMatch restricts an Allow rule to HTTP requests with one of Methods
// and one of Paths (each list, when empty, matches anything).
type HTTPMatch struct {
	Methods []string   `json:"methods,omitempty"`
	Paths   []HTTPPath `json:"paths,omitempty"`
}

// ICMPFields matches an ICMP type and, optionally, code.
type ICMPFields struct {
	Type *int `json:"type,omitempty"`
	Code *int `json:"code,omitempty"`
}

// EntityRule is the source or destination half of a rule.
type EntityRule struct {
	Nets              []string             `json:"nets,omitempty"`
	Selector          string               `json:"selector,omitempty"`
	NamespaceSelector string               `json:"namespaceSelector,omitempty"`
	Services          *ServiceMatch        `json:"services,omitempty"`
	Ports             []numorstring.Port   `json:"ports,omitempty"`
	NotNets           []string             `json:"notNets,omitempty"`
	NotSelector       string               `json:"notSelector,omitempty"`
	NotPorts          []numorstring.Port   `json:"notPorts,omitempty"`
	ServiceAccounts   *ServiceAccountMatch `json:"serviceAccounts,omitempty"`
}

// IsZero reports an entity rule with no criteria; it is what `omitzero`
// consults, so an empty-but-allocated list counts as empty too.
func (e EntityRule) IsZero() bool {
	return len(e.Nets) == 0 && e.Selector == "" && e.NamespaceSelector == "" && e.Services == nil &&
		len(e.Ports) == 0 && len(e.NotNets) == 0 && e.NotSelector == "" && len(e.NotPorts) == 0 &&
		e.ServiceAccounts == nil
}

// ServiceMatch matches the endpoints of a Kubernetes Service.
type ServiceMatch struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// ServiceAccountMatch matches pods running as the named service accounts
// and/or service accounts whose labels match Selector (ANDed).
type ServiceAccountMatch struct {
	Names    []string `json:"names,omitempty"`
	Selector string   `json:"selector,omitempty"`
}

// RuleMetadata is free-form information attached to a rule.
type RuleMetadata struct {
	Annotations map[string]string `json:"annotations,omitempty"`
}

// MaxRulesPerDirection is how many ingress (and, separately, egress) rules a
// policy may have, as in Calico.
const MaxRulesPerDirection = 1024

// ruleDirection says which list a rule is in.
type ruleDirection int

const (
	ingressRule ruleDirection = iota
	egressRule
)

// ruleContext is what rule validation needs to know about the rule's owner.
type ruleContext struct {
	dir ruleDirection
	// inPolicy is false for Profile rules, which Calico does not restrict by
	// direction (services, HTTP).
	inPolicy bool
	// global is true for cluster-scoped policies, whose service matches
	// must name a namespace.
	global bool
}

// validateRules checks a list of rules.
func validateRules(p Path, rules []Rule, ctx ruleContext) ErrorList {
	var errs ErrorList
	if len(rules) > MaxRulesPerDirection {
		errs = append(errs, p.Errorf("%d rules is more than the limit of %d", len(rules), MaxRulesPerDirection))
	}
	for i := range rules {
		errs = append(errs, validateRule(p.Index(i), &rules[i], ctx)...)
	}
	return errs
}

// validateRule checks one rule, as Calico's validator does.
func validateRule(p Path, r *Rule, ctx ruleContext) ErrorList {
	var errs ErrorList
	switch r.Action {
	case "":
		errs = append(errs, p.Child("action").Errorf("required: one of Allow, Deny, Log, Pass"))
	case Allow, Deny, Log, Pass:
	default:
		errs = append(errs, p.Child("action").Errorf("%q is not one of Allow, Deny, Log, Pass", r.Action))
	}
	if r.IPVersion != nil && *r.IPVersion != 4 && *r.IPVersion != 6 {
		errs = append(errs, p.Child("ipVersion").Errorf("%d is not 4 or 6", *r.IPVersion))
	}
	for _, pr := range []struct {
		name  string
		proto *numorstring.Protocol
	}{{"protocol", r.Protocol}, {"notProtocol", r.NotProtocol}} {
		if pr.proto == nil {
			continue
		}
		if err := pr.proto.Validate(); err != nil {
			errs = append(errs, p.Child(pr.name).Errorf("%v", err))
		}
		if r.IPVersion != nil {
			if pr.proto.Is(numorstring.ProtocolICMP) && *r.IPVersion != 4 {
				errs = append(errs, p.Child("ipVersion").Errorf("%s ICMP requires ipVersion 4", pr.name))
			}
			if pr.proto.Is(numorstring.ProtocolICMPv6) && *r.IPVersion != 6 {
				errs = append(errs, p.Child("ipVersion").Errorf("%s ICMPv6 requires ipVersion 6", pr.name))
			}
		}
	}
	isICMP := func(pr *numorstring.Protocol) bool {
		return pr != nil && (pr.Is(numorstring.ProtocolICMP) || pr.Is(numorstring.ProtocolICMPv6))
	}
	if r.ICMP != nil {
		errs = append(errs, validateICMP(p.Child("icmp"), r.ICMP)...)
		if !isICMP(r.Protocol) {
			errs = append(errs, p.Child("icmp").Errorf("icmp needs protocol ICMP or ICMPv6"))
		}
	}
	if r.NotICMP != nil {
		errs = append(errs, validateICMP(p.Child("notICMP"), r.NotICMP)...)
		if !isICMP(r.Protocol) && !isICMP(r.NotProtocol) {
			errs = append(errs, p.Child("notICMP").Errorf("notICMP needs protocol (or notProtocol) ICMP or ICMPv6"))
		}
	}

	// Ports only make sense for protocols that have them.
	portsOK := r.Protocol != nil && r.Protocol.SupportsPorts()
	for _, side := range []struct {
		name string
		e    *EntityRule
	}{{"source", &r.Source}, {"destination", &r.Destination}} {
		sp := p.Child(side.name)
		if !portsOK {
			if len(side.e.Ports) > 0 {
				errs = append(errs, sp.Child("ports").Errorf("ports need protocol TCP, UDP or SCTP"))
			}
			if len(side.e.NotPorts) > 0 {
				errs = append(errs, sp.Child("notPorts").Errorf("notPorts need protocol TCP, UDP or SCTP"))
			}
		}
		errs = append(errs, validateEntityRule(sp, side.e)...)
	}

	// Every net of the rule must be of one IP family, matching ipVersion.
	var seen4, seen6 bool
	for _, f := range []struct {
		path Path
		nets []string
	}{
		{p.Child("source").Child("nets"), r.Source.Nets},
		{p.Child("source").Child("notNets"), r.Source.NotNets},
		{p.Child("destination").Child("nets"), r.Destination.Nets},
		{p.Child("destination").Child("notNets"), r.Destination.NotNets},
	} {
		var v4, v6 bool
		for i, n := range f.nets {
			pfx, fe := ParseCIDR(f.path.Index(i), n)
			if fe != nil {
				errs = append(errs, fe)
				continue
			}
			if pfx.Addr().Is4() {
				v4 = true
			} else {
				v6 = true
			}
		}
		if r.IPVersion != nil && ((v4 && *r.IPVersion != 4) || (v6 && *r.IPVersion != 6)) {
			errs = append(errs, f.path.Errorf("CIDR IP version does not match ipVersion %d", *r.IPVersion))
		}
		if (v4 && v6) || (v4 && seen6) || (v6 && seen4) {
			errs = append(errs, f.path.Errorf("rule mixes IPv4 and IPv6 CIDRs"))
		}
		seen4 = seen4 || v4
		seen6 = seen6 || v6
	}

	if r.HTTP != nil {
		hp := p.Child("http")
		if r.Action != Allow {
			errs = append(errs, hp.Errorf("HTTP match is only valid on Allow rules"))
		}
		if ctx.inPolicy && ctx.dir == egressRule {
			errs = append(errs, hp.Errorf("HTTP match is not allowed in egress rules"))
		}
		if r.Protocol != nil && !r.Protocol.Is(numorstring.ProtocolTCP) {
			errs = append(errs, p.Child("protocol").Errorf("rules with HTTP match must have protocol TCP or none"))
		}
		errs = append(errs, validateHTTP(hp, r.HTTP)...)
	}

	if r.Destination.Services != nil {
		dp := p.Child("destination")
		if len(r.Destination.Ports) > 0 {
			errs = append(errs, dp.Child("ports").Errorf("cannot be used with services"))
		}
		if len(r.Destination.NotPorts) > 0 {
			errs = append(errs, dp.Child("notPorts").Errorf("cannot be used with services"))
		}
	}
	if ctx.inPolicy {
		if ctx.dir == egressRule && r.Source.Services != nil {
			errs = append(errs, p.Child("source").Child("services").Errorf("not allowed in an egress rule's source"))
		}
		if ctx.dir == ingressRule && r.Destination.Services != nil {
			errs = append(errs, p.Child("destination").Child("services").Errorf("not allowed in an ingress rule's destination"))
		}
		if ctx.global {
			for _, side := range []struct {
				name string
				s    *ServiceMatch
			}{{"source", r.Source.Services}, {"destination", r.Destination.Services}} {
				if side.s != nil && side.s.Name != "" && side.s.Namespace == "" {
					errs = append(errs, p.Child(side.name).Child("services").Child("namespace").Errorf("required in a global policy"))
				}
			}
		}
	}

	if r.Metadata != nil {
		mp := p.Child("metadata").Child("annotations")
		size := 0
		for k, v := range r.Metadata.Annotations {
			for _, msg := range validation.IsQualifiedName(strings.ToLower(k)) {
				errs = append(errs, mp.Key(k).Errorf("%s", msg))
			}
			size += len(k) + len(v)
		}
		if size > maxAnnotationBytes {
			errs = append(errs, mp.Errorf("annotations total %d bytes, more than the limit of %d", size, maxAnnotationBytes))
		}
	}
	return errs
}

// maxAnnotationBytes is Calico's (and Kubernetes') limit on the total size of
// a set of annotations.
const maxAnnotationBytes = 256 * 1024

func validateICMP(p Path, f *ICMPFields) ErrorList {
	var errs ErrorList
	if f.Type != nil && (*f.Type < 0 || *f.Type > 254) {
		errs = append(errs, p.Child("type").Errorf("%d is not an ICMP type 0-254", *f.Type))
	}
	if f.Code != nil {
		if *f.Code < 0 || *f.Code > 255 {
			errs = append(errs, p.Child("code").Errorf("%d is not an ICMP code 0-255", *f.Code))
		}
		if f.Type == nil {
			errs = append(errs, p.Child("code").Errorf("ICMP code needs an ICMP type"))
		}
	}
	return errs
}

func validateHTTP(p Path, h *HTTPMatch) ErrorList {
	var errs ErrorList
	seen := map[string]bool{}
	for i, m := range h.Methods {
		if seen[m] {
			errs = append(errs, p.Child("methods").Index(i).Errorf("duplicate method %q", m))
		}
		seen[m] = true
	}
	for i, hp := range h.Paths {
		pp := p.Child("paths").Index(i)
		v := hp.Exact
		switch {
		case hp.Exact != "" && hp.Prefix != "":
			errs = append(errs, pp.Errorf("only one of exact or prefix may be set"))
			continue
		case hp.Exact == "" && hp.Prefix == "":
			errs = append(errs, pp.Errorf("one of exact or prefix is required"))
			continue
		case v == "":
			v = hp.Prefix
		}
		if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, "? #") {
			errs = append(errs, pp.Errorf("path %q must start with '/' and contain no '?', '#' or space", v))
		}
	}
	return errs
}

// validateEntityRule checks selectors, ports and the service-match
// combinations of one side of a rule (nets are checked by the rule, which
// also needs their IP families).
func validateEntityRule(p Path, e *EntityRule) ErrorList {
	var errs ErrorList
	errs = append(errs, validateNonGlobalSelector(p.Child("selector"), e.Selector)...)
	errs = append(errs, validateNonGlobalSelector(p.Child("notSelector"), e.NotSelector)...)
	if sel, err := selector.Parse(e.NamespaceSelector); err != nil {
		errs = append(errs, p.Child("namespaceSelector").Errorf("invalid selector: %v", err))
	} else if c := sel.String(); c != "global()" && usesGlobal(c) {
		errs = append(errs, p.Child("namespaceSelector").Errorf("global() cannot be combined with other selectors"))
	}
	for _, f := range []struct {
		name  string
		ports []numorstring.Port
	}{{"ports", e.Ports}, {"notPorts", e.NotPorts}} {
		for i, port := range f.ports {
			if err := port.Validate(); err != nil {
				errs = append(errs, p.Child(f.name).Index(i).Errorf("%v", err))
			}
		}
	}
	if sa := e.ServiceAccounts; sa != nil {
		sp := p.Child("serviceAccounts")
		errs = append(errs, validateNonGlobalSelector(sp.Child("selector"), sa.Selector)...)
		for i, n := range sa.Names {
			for _, msg := range validation.IsDNS1123Subdomain(n) {
				errs = append(errs, sp.Child("names").Index(i).Errorf("%q: %s", n, msg))
			}
		}
	}
	if s := e.Services; s != nil {
		sp := p.Child("services")
		if s.Name == "" {
			errs = append(errs, sp.Child("name").Errorf("required"))
		} else {
			for _, msg := range validation.IsDNS1123Subdomain(s.Name) {
				errs = append(errs, sp.Child("name").Errorf("%q: %s", s.Name, msg))
			}
		}
		if s.Namespace != "" {
			for _, msg := range validation.IsDNS1123Subdomain(s.Namespace) {
				errs = append(errs, sp.Child("namespace").Errorf("%q: %s", s.Namespace, msg))
			}
		}
		if e.NamespaceSelector != "" {
			errs = append(errs, sp.Errorf("cannot be used with namespaceSelector"))
		}
		if e.Selector != "" || e.NotSelector != "" {
			errs = append(errs, sp.Errorf("cannot be used with selector or notSelector"))
		}
		if e.ServiceAccounts != nil {
			errs = append(errs, sp.Errorf("cannot be used with serviceAccounts"))
		}
		if len(e.Nets) > 0 || len(e.NotNets) > 0 {
			errs = append(errs, sp.Errorf("cannot be used with nets or notNets"))
		}
	}
	return errs
}

// validateNonGlobalSelector checks a selector that must parse and must not
// use global(), which only a rule's namespaceSelector may.
func validateNonGlobalSelector(p Path, expr string) ErrorList {
	sel, err := selector.Parse(expr)
	if err != nil {
		return ErrorList{p.Errorf("invalid selector: %v", err)}
	}
	if usesGlobal(sel.String()) {
		return ErrorList{p.Errorf("global() can only be used in a rule's namespaceSelector")}
	}
	return nil
}

// usesGlobal reports whether a canonical selector calls global(), ignoring
// quoted strings (a label value may well be the text "global()").
func usesGlobal(canonical string) bool {
	var quote byte
	for i := 0; i < len(canonical); i++ {
		c := canonical[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case strings.HasPrefix(canonical[i:], "global()"):
			return true
		}
	}
	return false
}

// validateNameField checks a reference to another resource by name with
// ValidateResourceName (Calico's `name` rule); empty is allowed unless
// required.
func validateNameField(p Path, v string, required bool) ErrorList {
	if v == "" && !required {
		return nil
	}
	return ValidateResourceName(p, v)
}

// validateNames checks each entry of a list of resource names.
func validateNames(p Path, names []string) ErrorList {
	var errs ErrorList
	for i, n := range names {
		errs = append(errs, validateNameField(p.Index(i), n, true)...)
	}
	return errs
}

// validateOrder rejects an order that is not a finite number.
func validateOrder(p Path, order *float64) ErrorList {
	if order != nil && (math.IsNaN(*order) || math.IsInf(*order, 0)) {
		return ErrorList{p.Errorf("%v is not a finite number", *order)}
	}
	return nil
}
