package nft

import (
	"crypto/sha256"
	"encoding/base32"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tortie/tortie/pkg/calc"
)

// maxComment is the longest comment nft accepts (NFT_USERDATA_MAXLEN less
// its framing): a longer one fails the whole transaction.
const maxComment = 128

// comment makes text safe as an nft comment: nft has no escape for '"', so
// double quotes (selectors quote strings with them) become single quotes,
// line breaks become spaces, and the text is cut to maxComment bytes on a
// character boundary. Every comment the driver writes goes through here, so
// what it wants and what the kernel lists back compare equal.
func comment(text string) string {
	if len(text) <= maxComment && !strings.ContainsAny(text, "\"\n\r") {
		return text // the common case, without a copy
	}
	text = commentReplacer.Replace(text)
	if len(text) <= maxComment {
		return text
	}
	cut := maxComment - len("...")
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut] + "..."
}

var commentReplacer = strings.NewReplacer(`"`, "'", "\n", " ", "\r", " ")

// Every chain, set and map name of the table comes from this file.
//
// Fixed objects have constant names. Objects that exist per IP set or per
// compiled program are named by a hash of their identity (and a program's
// class chains by the program and their place in it), so the names are
// short (well under the kernel's 256-byte NFT_NAME_MAXLEN and readable in
// `nft list`) and stable across restarts (a new Driver finds the names it
// would have chosen).

// Base chains, one per hook the driver filters on.
const (
	// ChainForward filters forwarded traffic: workload egress and ingress,
	// host endpoint applyOnForward policy.
	ChainForward = "filter-forward"
	// ChainInput filters traffic to the host: workload egress, the
	// endpoint-to-host action, failsafe ports, host endpoint ingress.
	ChainInput = "filter-input"
	// ChainOutput filters traffic from the host: workload ingress for
	// host-to-workload traffic, failsafe ports, host endpoint egress.
	ChainOutput = "filter-output"
	// ChainPreDNAT runs before DNAT (at mangle priority) for preDNAT policy.
	ChainPreDNAT = "mangle-prerouting"
	// ChainRawPrerouting and ChainRawOutput run before connection tracking
	// for doNotTrack policy.
	ChainRawPrerouting = "raw-prerouting"
	ChainRawOutput     = "raw-output"
	// ChainNATPostrouting masquerades natOutgoing traffic.
	ChainNATPostrouting = "nat-postrouting"
)

// Dispatch verdict maps, keyed by interface name.
const (
	// MapWorkloadFrom sends packets from a workload interface to the
	// program of that workload's egress policy.
	MapWorkloadFrom = "wl-from"
	// MapWorkloadTo sends packets to a workload interface to the program
	// of that workload's ingress policy.
	MapWorkloadTo = "wl-to"
	// SetWorkloadIfaces holds every known workload interface, so that an
	// unknown one can be dropped (fail closed).
	SetWorkloadIfaces = "wl-ifaces"

	MapHostIn          = "hep-in"
	MapHostOut         = "hep-out"
	MapHostForwardIn   = "hep-fwd-in"
	MapHostForwardOut  = "hep-fwd-out"
	MapHostPreDNATIn   = "hep-prednat-in"
	MapHostUntrackedIn = "hep-untracked-in"
	MapHostUntrackOut  = "hep-untracked-out"
)

// Sets of configuration.
const (
	SetFailsafeIn  = "failsafe-in"
	SetFailsafeOut = "failsafe-out"
	// SetPoolsV4/V6 hold every IP pool; SetNATPoolsV4/V6 the pools with
	// natOutgoing.
	SetPoolsV4    = "pools-v4"
	SetPoolsV6    = "pools-v6"
	SetNATPoolsV4 = "nat-pools-v4"
	SetNATPoolsV6 = "nat-pools-v6"
)

// Prefixes of hashed names. The driver recognises its per-IP-set and
// per-program objects by these when it lists the kernel's table.
const (
	prefixAddrSet      = "ips-"
	prefixNamedPortSet = "npt-"
	prefixProgram      = "p-"
)

// lowerBase32 is standard base32 in lower case, unpadded.
var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// hashName is the first n characters (at most 51) of a lower-case base32
// SHA-256 of s. Only the bytes those characters encode are encoded (5 bits
// a character): names are hashed for every rule compiled.
func hashName(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return lowerBase32.EncodeToString(sum[:(n*5+7)/8])[:n]
}

// ipSetName is the kernel set holding one family (4 or 6) of calc IP set
// id of the given kind. Named-port sets and address sets get different
// prefixes so `nft list` says which is which.
func ipSetName(id string, kind calc.IPSetKind, family int) string {
	p := prefixAddrSet
	if kind == calc.NamedPortSet {
		p = prefixNamedPortSet
	}
	f := "-v4"
	if family == 6 {
		f = "-v6"
	}
	return p + hashName(id, 16) + f
}

// programName is the entry chain of a compiled program. Its hash is of
// what the program is compiled from (see Driver.compile), not of its
// content: equal programs (endpoints with the same policies) share one,
// and a policy change updates it in place.
func programName(sigHash string) string { return prefixProgram + sigHash }

// programClassMap is a program's (dport . l4proto) dispatch map.
func programClassMap(prog string) string { return prog + classMapSuffix }

// programClassMapAlt is the program's other class map name: a change that
// would delete many elements of the map in use writes a new map under the
// other name instead (see Driver.install).
func programClassMapAlt(prog string) string { return prog + classMapAltSuffix }

const (
	classMapSuffix    = "-cls"
	classMapAltSuffix = "-cls-b"
)

// classMapProgram is the program of class map n (either name), "" when n
// is not a class map.
func classMapProgram(n string) string {
	if p, ok := strings.CutSuffix(n, classMapSuffix); ok {
		return p
	}
	if p, ok := strings.CutSuffix(n, classMapAltSuffix); ok {
		return p
	}
	return ""
}

// classChainName is a chain of one port class of a program (seg > 0: its
// continuation at block seg, the target of a Pass), named by where the
// class starts (its protocol, 0 for the class of rules without ports, and
// first port): when the rules of a class change, its chain is rewritten in
// place and the class map, which a packet looks up to reach it, stays as it
// is (replacing one of 10,000 elements of that interval map costs the
// kernel 10–20 ms; rewriting a chain costs it one validation of the table).
func classChainName(prog string, proto uint8, first, seg int) string {
	n := prog + "-" + protoName(proto) + "-" + strconv.Itoa(first)
	if proto == 0 {
		n = prog + "-any"
	}
	if seg > 0 {
		n += "-s" + strconv.Itoa(seg)
	}
	return n
}
