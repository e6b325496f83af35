package v3

import (
	"net/netip"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPPool is a range of addresses Calico IPAM hands out, cut into blocks that
// are made affine to nodes.
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec IPPoolSpec `json:"spec,omitempty"`
	// Status is written by the datastore client, never by users; it is here
	// so that a pool read back from Kubernetes-backed Calico still decodes.
	Status *IPPoolStatus `json:"status,omitempty"`
}

// IPPoolSpec is the JSON shape of Calico's IPPoolSpec, field for field.
type IPPoolSpec struct {
	CIDR              string            `json:"cidr"`
	VXLANMode         EncapsulationMode `json:"vxlanMode,omitempty"`
	IPIPMode          EncapsulationMode `json:"ipipMode,omitempty"`
	NATOutgoing       bool              `json:"natOutgoing,omitempty"`
	Disabled          bool              `json:"disabled,omitempty"`
	DisableBGPExport  bool              `json:"disableBGPExport,omitempty"`
	BlockSize         int               `json:"blockSize,omitempty"`
	NodeSelector      string            `json:"nodeSelector,omitempty"`
	NamespaceSelector string            `json:"namespaceSelector,omitempty"`

	// IPIP and NATOutgoingV1 are the API v1 spellings. Calico v3 still decodes
	// them but refuses any write that sets them; so does tortie.
	IPIP          *IPIPConfiguration `json:"ipip,omitempty"`
	NATOutgoingV1 bool               `json:"nat-outgoing,omitempty"`

	AllowedUses    []IPPoolAllowedUse `json:"allowedUses,omitempty"`
	AssignmentMode *AssignmentMode    `json:"assignmentMode,omitempty"`
}

// IPIPConfiguration is the deprecated v1 form of ipipMode.
type IPIPConfiguration struct {
	Enabled bool   `json:"enabled,omitempty"`
	Mode    string `json:"mode,omitempty"`
}

// IPPoolStatus carries the conditions newer Calico clients record on a pool.
type IPPoolStatus struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// EncapsulationMode is an IPPool's ipipMode or vxlanMode.
type EncapsulationMode string

// Encapsulation modes.
const (
	EncapNever       EncapsulationMode = "Never"
	EncapAlways      EncapsulationMode = "Always"
	EncapCrossSubnet EncapsulationMode = "CrossSubnet"
)

// IPPoolAllowedUse says what a pool's addresses may be used for.
type IPPoolAllowedUse string

// Allowed uses.
const (
	AllowedUseWorkload     IPPoolAllowedUse = "Workload"
	AllowedUseTunnel       IPPoolAllowedUse = "Tunnel"
	AllowedUseLoadBalancer IPPoolAllowedUse = "LoadBalancer"
)

// AssignmentMode says whether IPAM hands out a pool's addresses unasked.
type AssignmentMode string

// Assignment modes.
const (
	AssignmentAutomatic AssignmentMode = "Automatic"
	AssignmentManual    AssignmentMode = "Manual"
)

// Default block sizes, as in Calico.
const (
	DefaultBlockSizeV4 = 26
	DefaultBlockSizeV6 = 122
)

// Ranges an IP pool may not overlap. Calico forbids the link-local ranges;
// tortie also refuses loopback and multicast, which can never carry workload
// traffic.
var forbiddenPoolRanges = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("169.254.0.0/16"), "the IPv4 link-local range"},
	{netip.MustParsePrefix("127.0.0.0/8"), "the IPv4 loopback range"},
	{netip.MustParsePrefix("224.0.0.0/4"), "the IPv4 multicast range"},
	{netip.MustParsePrefix("fe80::/10"), "the IPv6 link-local range"},
	{netip.MustParsePrefix("::1/128"), "the IPv6 loopback address"},
	{netip.MustParsePrefix("ff00::/8"), "the IPv6 multicast range"},
}

// parsePoolCIDR parses a CIDR that must carry a prefix length and be masked.
func parsePoolCIDR(p Path, s string) (netip.Prefix, *FieldError) {
	if s == "" {
		return netip.Prefix{}, p.Errorf("required")
	}
	if !strings.Contains(s, "/") {
		return netip.Prefix{}, p.Errorf("%q is not a CIDR: a prefix length is required (e.g. %s/16)", s, s)
	}
	return ParseCIDR(p, s)
}

func (r *IPPool) setDefaults() {
	s := &r.Spec
	// Calico stores the CIDR in canonical form (lower-case, shortest IPv6).
	// A CIDR with host bits set is left alone for validation to reject.
	pfx, err := netip.ParsePrefix(s.CIDR)
	if err == nil && pfx.Masked() == pfx {
		s.CIDR = pfx.String()
	}
	if s.BlockSize == 0 && err == nil {
		if pfx.Addr().Is4() {
			s.BlockSize = DefaultBlockSizeV4
		} else {
			s.BlockSize = DefaultBlockSizeV6
		}
	}
	if s.NodeSelector == "" {
		s.NodeSelector = "all()"
	}
	if len(s.AllowedUses) == 0 {
		s.AllowedUses = []IPPoolAllowedUse{AllowedUseWorkload, AllowedUseTunnel}
	}
	if s.AssignmentMode == nil {
		m := AssignmentAutomatic
		s.AssignmentMode = &m
	}
	if s.IPIPMode == "" {
		s.IPIPMode = EncapNever
	}
	if s.VXLANMode == "" {
		s.VXLANMode = EncapNever
	}
}

func (r *IPPool) validate() ErrorList {
	var errs ErrorList
	s := &r.Spec
	spec := Path("spec")
	modes := []string{string(EncapNever), string(EncapAlways), string(EncapCrossSubnet)}
	errs = append(errs, ValidateOneOf(spec.Child("ipipMode"), string(s.IPIPMode), modes...)...)
	errs = append(errs, ValidateOneOf(spec.Child("vxlanMode"), string(s.VXLANMode), modes...)...)
	if on(s.IPIPMode) && on(s.VXLANMode) {
		errs = append(errs, spec.Child("vxlanMode").Errorf("cannot enable both VXLAN and IPIP on the same IP pool"))
	}

	pfx, fe := parsePoolCIDR(spec.Child("cidr"), s.CIDR)
	if fe != nil {
		errs = append(errs, fe)
	} else {
		errs = append(errs, validatePoolRange(spec, s, pfx)...)
	}

	if s.NodeSelector != "" {
		errs = append(errs, ValidateSelector(spec.Child("nodeSelector"), s.NodeSelector)...)
	}
	if s.NamespaceSelector != "" {
		errs = append(errs, ValidateSelector(spec.Child("namespaceSelector"), s.NamespaceSelector)...)
	}
	if s.IPIP != nil {
		errs = append(errs, spec.Child("ipip").Errorf("the API v1 field ipip may not be set; use ipipMode"))
	}
	if s.NATOutgoingV1 {
		errs = append(errs, spec.Child("nat-outgoing").Errorf("the API v1 field nat-outgoing may not be set; use natOutgoing"))
	}

	seen := map[IPPoolAllowedUse]bool{}
	lb := false
	for i, u := range s.AllowedUses {
		p := spec.Child("allowedUses").Index(i)
		if u == "" {
			errs = append(errs, p.Errorf("must not be empty"))
			continue
		}
		errs = append(errs, ValidateOneOf(p, string(u), string(AllowedUseWorkload), string(AllowedUseTunnel), string(AllowedUseLoadBalancer))...)
		if seen[u] {
			errs = append(errs, p.Errorf("%q is listed twice", u))
		}
		seen[u] = true
		lb = lb || u == AllowedUseLoadBalancer
	}
	if lb && len(seen) > 1 {
		errs = append(errs, spec.Child("allowedUses").Errorf("LoadBalancer cannot be combined with other uses"))
	}
	// Tunnel addresses belong to nodes, not to anything in a namespace, so
	// Calico refuses a namespaceSelector on a pool that may hand them out
	// (which, with the default allowedUses, is every pool that names none).
	if s.NamespaceSelector != "" && seen[AllowedUseTunnel] {
		errs = append(errs, spec.Child("namespaceSelector").Errorf("IP pool with allowedUses Tunnel cannot have a namespaceSelector; set allowedUses to [Workload]"))
	}
	if s.AssignmentMode != nil {
		if *s.AssignmentMode == "" {
			errs = append(errs, spec.Child("assignmentMode").Errorf("must be Automatic or Manual"))
		}
		errs = append(errs, ValidateOneOf(spec.Child("assignmentMode"), string(*s.AssignmentMode), string(AssignmentAutomatic), string(AssignmentManual))...)
	}
	return errs
}

func on(m EncapsulationMode) bool { return m != "" && m != EncapNever }

// validatePoolRange checks what depends on the pool's address family and size.
func validatePoolRange(spec Path, s *IPPoolSpec, pfx netip.Prefix) ErrorList {
	var errs ErrorList
	v4 := pfx.Addr().Is4()
	bs := spec.Child("blockSize")
	switch {
	case v4 && (s.BlockSize < 20 || s.BlockSize > 32):
		errs = append(errs, bs.Errorf("IPv4 block size must be between 20 and 32, not %d", s.BlockSize))
	case !v4 && (s.BlockSize < 116 || s.BlockSize > 128):
		errs = append(errs, bs.Errorf("IPv6 block size must be between 116 and 128, not %d", s.BlockSize))
	case !s.Disabled && pfx.Bits() > s.BlockSize:
		// As in Calico, only an enabled pool must hold at least one block.
		errs = append(errs, spec.Child("cidr").Errorf("IP pool %s is smaller than its block size /%d; use a larger pool or a larger blockSize", pfx, s.BlockSize))
	}
	if !v4 && on(s.IPIPMode) {
		errs = append(errs, spec.Child("ipipMode").Errorf("IPIP is not supported on an IPv6 IP pool"))
	}
	for _, f := range forbiddenPoolRanges {
		if f.prefix.Overlaps(pfx) {
			errs = append(errs, spec.Child("cidr").Errorf("IP pool %s overlaps %s %s", pfx, f.what, f.prefix))
		}
	}
	return errs
}

// IPReservation keeps addresses out of IPAM's hands (new allocations only).
type IPReservation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec IPReservationSpec `json:"spec,omitempty"`
}

// IPReservationSpec lists the reserved CIDRs and single addresses.
type IPReservationSpec struct {
	ReservedCIDRs []string `json:"reservedCIDRs,omitempty"`
}

func (r *IPReservation) validate() ErrorList {
	return ValidateCIDRs(Path("spec").Child("reservedCIDRs"), r.Spec.ReservedCIDRs)
}
