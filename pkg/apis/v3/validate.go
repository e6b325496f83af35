package v3

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tortie/tortie/pkg/selector"
)

// lazyRegexp compiles expr on first use rather than at package init. A
// bounded repetition such as {1,253} compiles to that many copies of its
// class (thousands of allocations); compiled at init, every process that
// links this package paid for every pattern at start, the CNI plugin once
// per pod, whether or not it validated a resource that uses them.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// Each kind implements these on its pointer type. Defaulting runs before
// validation, so validate may rely on defaults being present.
type defaulter interface{ setDefaults() }
type validator interface{ validate() ErrorList }

// nameValidator lets a kind replace the generic metadata.name rule (policies
// accept a tier prefix, WorkloadEndpoints have a derived name, ...).
type nameValidator interface{ validateName(p Path) ErrorList }

// SetDefaults fills in every default Calico's client fills before writing.
// It is idempotent.
func SetDefaults(r Resource) {
	if d, ok := r.(defaulter); ok {
		d.setDefaults()
	}
}

// Validate checks the whole object and returns an ErrorList naming every bad
// field, or nil.
func Validate(r Resource) error {
	var errs ErrorList
	meta := Path("metadata")
	k := KindOf(r)
	if k == nil {
		return ErrorList{{Field: "kind", Detail: fmt.Sprintf("unknown kind %q", r.GetObjectKind().GroupVersionKind().Kind)}}
	}
	if nv, ok := r.(nameValidator); ok {
		errs = append(errs, nv.validateName(meta.Child("name"))...)
	} else {
		errs = append(errs, ValidateResourceName(meta.Child("name"), r.GetName())...)
	}
	switch {
	case k.Namespaced && r.GetNamespace() == "":
		errs = append(errs, meta.Child("namespace").Errorf("required for %s", k.Kind))
	case k.Namespaced:
		for _, msg := range validation.IsDNS1123Label(r.GetNamespace()) {
			errs = append(errs, meta.Child("namespace").Errorf("%q: %s", r.GetNamespace(), msg))
		}
	case r.GetNamespace() != "":
		errs = append(errs, meta.Child("namespace").Errorf("%s is cluster-scoped and takes no namespace", k.Kind))
	}
	errs = append(errs, ValidateLabels(meta.Child("labels"), r.GetLabels())...)
	for key := range r.GetAnnotations() {
		for _, msg := range validation.IsQualifiedName(key) {
			errs = append(errs, meta.Child("annotations").Key(key).Errorf("%s", msg))
		}
	}
	if v, ok := r.(validator); ok {
		errs = append(errs, v.validate()...)
	}
	return errs.ToError()
}

// ValidateResourceName applies the default rule: a DNS-1123 subdomain.
func ValidateResourceName(p Path, name string) ErrorList {
	if name == "" {
		return ErrorList{p.Errorf("required")}
	}
	var errs ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		errs = append(errs, p.Errorf("%q: %s", name, msg))
	}
	return errs
}

// ValidateLabels checks label keys and values as Kubernetes does.
func ValidateLabels(p Path, labels map[string]string) ErrorList {
	var errs ErrorList
	for k, v := range labels {
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, p.Key(k).Errorf("invalid label key: %s", msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, p.Key(k).Errorf("invalid label value %q: %s", v, msg))
		}
	}
	return errs
}

// ValidateSelector reports a selector that does not parse, with the parser's
// own message (what was expected, at which character).
func ValidateSelector(p Path, expr string) ErrorList {
	if _, err := selector.Parse(expr); err != nil {
		return ErrorList{p.Errorf("invalid selector: %v", err)}
	}
	return nil
}

// ParseCIDR parses a CIDR (or a bare address, taken as a host prefix) and
// requires it to be masked: 10.0.0.1/8 is an error, as in Calico.
func ParseCIDR(p Path, s string) (netip.Prefix, *FieldError) {
	pfx, fe := parsePrefix(p, s)
	if fe == nil && pfx.Masked() != pfx {
		return netip.Prefix{}, p.Errorf("CIDR %s has host bits set; did you mean %s?", s, pfx.Masked())
	}
	return pfx, fe
}

// ParseNet parses a CIDR or a bare address (taken as a host prefix) without
// requiring the host bits to be clear, and returns it masked: "10.0.0.1/8"
// gives 10.0.0.0/8. This is Calico's `cidr` rule (network sets); rule nets use
// the strict ParseCIDR.
func ParseNet(p Path, s string) (netip.Prefix, *FieldError) {
	pfx, fe := parsePrefix(p, s)
	return pfx.Masked(), fe
}

func parsePrefix(p Path, s string) (netip.Prefix, *FieldError) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, p.Errorf("%q is not a valid IP address or CIDR", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, p.Errorf("%q is not a valid CIDR", s)
	}
	return pfx, nil
}

// ValidateCIDRs checks a list of CIDRs with ParseCIDR.
func ValidateCIDRs(p Path, cidrs []string) ErrorList {
	var errs ErrorList
	for i, c := range cidrs {
		if _, fe := ParseCIDR(p.Index(i), c); fe != nil {
			errs = append(errs, fe)
		}
	}
	return errs
}

// ValidateIP checks a single address (no prefix length).
func ValidateIP(p Path, s string) ErrorList {
	if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
		return ErrorList{p.Errorf("%q is not a valid IP address", s)}
	}
	return nil
}

// ValidateOneOf reports a value outside the allowed set; empty is allowed
// (defaulting or omission is decided by the caller).
func ValidateOneOf(p Path, v string, allowed ...string) ErrorList {
	if v == "" {
		return nil
	}
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return ErrorList{p.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))}
}
