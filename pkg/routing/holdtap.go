package routing

import (
	"context"
	"log/slog"
	"net/netip"
)

// GoBGP treats a hold timer expiry like a graceful restart of the peer: it
// keeps the peer's routes, marked stale, for the peer's whole restart time
// (GoBGP issue 2174). RFC 4724 keeps routes only when the session ends
// without a NOTIFICATION, and a hold timer expiry sends one: the peer is
// unreachable, not restarting, and its routes must go now, or a host whose
// link was cut stays a black hole for minutes. pkg/bgp does not report the
// difference (both are "graceful restart"), so the component listens to
// GoBGP's own log: holdTap is the slog.Handler under the speaker's logger,
// and calls expired with the peer's address when GoBGP logs "hold timer
// expired" for it. The component then leaves that peer's stale routes out
// of the kernel until the session is Established again.
type holdTap struct {
	next    slog.Handler
	peer    string // GoBGP's per-peer "Key" attribute
	expired func(netip.Addr)
}

const gobgpHoldExpired = "hold timer expired"

func (h *holdTap) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *holdTap) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == gobgpHoldExpired && h.peer != "" {
		if a, err := netip.ParseAddr(h.peer); err == nil {
			h.expired(a.Unmap())
		}
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *holdTap) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	for _, a := range as {
		if a.Key == "Key" {
			c.peer = a.Value.String()
		}
	}
	return &c
}

func (h *holdTap) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}
