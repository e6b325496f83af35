package main

import (
	"context"
	"errors"
	"net/http"

	"github.com/tortie/tortie/pkg/routing"
	"github.com/tortie/tortie/pkg/syncer"
)

// routingComponent runs pkg/routing inside the agent. Routing watches the
// datastore itself (it needs IPAM blocks, which are not v3 kinds), so to the
// agent it is a Runner with no kinds; its Apply, called on every full apply,
// reports whether routing is programmed, so /readiness covers it too. Its
// name makes its status /status/bgp, where `tortie node status` asks.
type routingComponent struct{ c *routing.Component }

var errRoutingNotReady = errors.New("routes and BGP not programmed yet")

func (r *routingComponent) Name() string                  { return "bgp" }
func (r *routingComponent) Kinds() []string               { return nil }
func (r *routingComponent) OnUpdate(syncer.Update)        {}
func (r *routingComponent) OnInSync()                     {}
func (r *routingComponent) Run(ctx context.Context) error { return r.c.Run(ctx) }
func (r *routingComponent) ServeStatus(w http.ResponseWriter, req *http.Request) {
	r.c.Handler().ServeHTTP(w, req)
}

func (r *routingComponent) Apply(context.Context, bool) error {
	if !r.c.Ready() {
		return errRoutingNotReady
	}
	if st := r.c.Status(); st.LastError != "" {
		return errors.New(st.LastError)
	}
	return nil
}
