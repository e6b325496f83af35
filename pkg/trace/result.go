package trace

import (
	"fmt"
	"io"
	"strings"

	"github.com/tortie/tortie/pkg/calc"
)

// Result is a packet's way from its source to its destination: the
// egress policy of the source (when it is an endpoint), then, when that
// allowed it, the ingress policy of the destination (when it is one).
type Result struct {
	Packet Packet `json:"packet"`
	// Source and Destination say what each end is: an endpoint
	// ("WorkloadEndpoint:ns/name on node N") or "address A (not an
	// endpoint: no policy applies on this side)".
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Egress      *Side  `json:"egress,omitempty"`
	Ingress     *Side  `json:"ingress,omitempty"`
	// IngressNotReached: the egress side denied, so the destination's
	// policy was not consulted.
	IngressNotReached bool        `json:"ingressNotReached,omitempty"`
	Verdict           calc.Action `json:"verdict"`
	// DecidedBy is the side and decision that made the verdict (for Allow:
	// the last side that allowed); empty when no policy applied.
	DecidedBy string `json:"decidedBy,omitempty"`
	// Staged is the same packet with every staged policy in force
	// (stagedAction Set replaces or adds the policy of its name, Delete
	// removes it); nil when there are no staged policies.
	Staged *Result `json:"staged,omitempty"`
	// StagedProblems are staged policies left out because they cannot be
	// read, each naming the policy and why.
	StagedProblems []string `json:"stagedProblems,omitempty"`
}

// Combine makes the result of a path: egress and ingress may be nil (that
// end is not an endpoint); ingress is ignored when egress denied.
func Combine(p Packet, source, destination string, egress, ingress *Side) *Result {
	r := &Result{Packet: p, Source: source, Destination: destination, Egress: egress, Verdict: calc.Allow}
	if egress != nil {
		r.DecidedBy = "egress of " + egress.Endpoint + ": " + egress.Decision.String()
		if egress.Verdict != calc.Allow {
			r.Verdict = calc.Deny
			r.IngressNotReached = ingress != nil
			return r
		}
	}
	if ingress != nil {
		r.Ingress = ingress
		r.Verdict = ingress.Verdict
		r.DecidedBy = "ingress of " + ingress.Endpoint + ": " + ingress.Decision.String()
	}
	if egress == nil && ingress == nil {
		r.DecidedBy = "no policy applies: neither end is an endpoint"
	}
	return r
}

// Write prints r for a reader: the packet, each side tier by tier with
// every rule considered, the verdict, and what the staged policies would
// change.
func Write(w io.Writer, r *Result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Packet:       %s\n", r.Packet)
	fmt.Fprintf(&b, "Source:       %s\n", r.Source)
	fmt.Fprintf(&b, "Destination:  %s\n", r.Destination)
	writeSides(&b, r)
	fmt.Fprintf(&b, "\nVerdict: %s\n  by %s\n", r.Verdict, r.DecidedBy)
	for _, p := range r.StagedProblems {
		fmt.Fprintf(&b, "\nwarning: %s\n", p)
	}
	if s := r.Staged; s != nil {
		if s.Verdict == r.Verdict && s.DecidedBy == r.DecidedBy {
			fmt.Fprintf(&b, "\nWith the staged policies in force: no change (%s)\n", s.Verdict)
		} else {
			b.WriteString("\nWith the staged policies in force:\n")
			writeSides(&b, s)
			fmt.Fprintf(&b, "\nStaged verdict: %s\n  by %s\n", s.Verdict, s.DecidedBy)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeSides(b *strings.Builder, r *Result) {
	if r.Egress != nil {
		writeSide(b, r.Egress)
	}
	if r.IngressNotReached {
		b.WriteString("\nIngress of the destination: not reached (egress denied)\n")
	}
	if r.Ingress != nil {
		writeSide(b, r.Ingress)
	}
}

func writeSide(b *strings.Builder, s *Side) {
	fmt.Fprintf(b, "\n%s of %s\n", s.Direction, s.Endpoint)
	if len(s.Tiers) == 0 {
		b.WriteString("  no tier has a policy for this endpoint and direction\n")
	}
	for _, t := range s.Tiers {
		fmt.Fprintf(b, "  tier %s (default action %s)\n", t.Tier, t.DefaultAction)
		for _, p := range t.Policies {
			staged := ""
			if p.Staged {
				staged = " (staged)"
			}
			fmt.Fprintf(b, "    policy %s%s\n", p.Policy, staged)
			if p.Missing {
				b.WriteString("      (no rules known)\n")
			}
			if len(p.Rules) == 0 && !p.Missing {
				fmt.Fprintf(b, "      no %s rules\n", strings.ToLower(string(s.Direction)))
			}
			writeRules(b, p.Rules)
		}
		fmt.Fprintf(b, "    -> %s\n", tierOutcome(t))
	}
	for _, p := range s.Profiles {
		fmt.Fprintf(b, "  profile %s\n", p.Profile)
		if p.Missing {
			b.WriteString("    does not exist: deny\n")
			continue
		}
		if len(p.Rules) == 0 {
			fmt.Fprintf(b, "    no %s rules\n", strings.ToLower(string(s.Direction)))
		}
		writeRules(b, p.Rules)
	}
	fmt.Fprintf(b, "  => %s: %s\n", s.Verdict, s.Decision)
}

func writeRules(b *strings.Builder, rs []RuleStep) {
	for _, r := range rs {
		m := "no match"
		if r.Matched {
			m = "MATCH"
		}
		fmt.Fprintf(b, "      rule %d %-5s %-8s %s\n", r.Index, r.Action, m+":", r.Why)
	}
}

func tierOutcome(t TierStep) string {
	switch t.Outcome {
	case "decided":
		return "decided"
	case "pass":
		return "Pass: next tier"
	case "default Pass":
		return "no rule decided: default action Pass, next tier"
	}
	return "no rule decided: default action Deny"
}
