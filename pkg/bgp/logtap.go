package bgp

import (
	"context"
	"log/slog"
)

// tapHandler is the slog.Handler given to GoBGP. It forwards what the
// speaker's own logger wants, and also picks out the records that explain
// why a session is down — GoBGP reports failed dials only in its debug log,
// not in any event — and hands them to tap.
type tapHandler struct {
	next slog.Handler
	peer string // the "Key" attribute GoBGP attaches to each peer's logger
	tap  func(peer, msg string, attrs map[string]string)
	drop func(msg string) bool // records not worth forwarding
}

// Messages GoBGP logs that say why a session is not up.
const (
	gobgpFailedToConnect = "failed to connect"
	gobgpHoldExpired     = "hold timer expired"
)

var tappedMessages = map[string]bool{gobgpFailedToConnect: true, gobgpHoldExpired: true}

func (h *tapHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return true // debug records are needed for the tap even when not logged
}

func (h *tapHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.peer != "" && tappedMessages[r.Message] {
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		h.tap(h.peer, r.Message, attrs)
	}
	if !h.next.Enabled(ctx, r.Level) || (h.drop != nil && h.drop(r.Message)) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *tapHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	for _, a := range as {
		if a.Key == "Key" {
			c.peer = a.Value.String()
		}
	}
	return &c
}

func (h *tapHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}
