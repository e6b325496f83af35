// Package serve opens and serves the HTTP endpoints of tortie's
// long-running binaries (the agent, the Kubernetes controllers): one for
// health (/liveness, /readiness, ...), one for Prometheus metrics and one
// for Go's profiler (net/http/pprof, off unless asked for), each on an
// address of its own or nowhere.
//
// The listeners are opened when the binary is built, so that a taken port
// is an error before anything runs, and served once it runs.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"
)

// Listeners are the opened health, metrics and profiler endpoints; any may
// be absent.
type Listeners struct {
	health, metrics, debug net.Listener
}

// Listen opens the health, metrics and profiler endpoints ("": that one
// nowhere). When one cannot be opened, those already open are closed again.
func Listen(healthAddr, metricsAddr, debugAddr string) (*Listeners, error) {
	l := &Listeners{}
	for _, ep := range []struct {
		what, addr string
		ln         *net.Listener
	}{{"health", healthAddr, &l.health}, {"metrics", metricsAddr, &l.metrics}, {"profiler (debug)", debugAddr, &l.debug}} {
		if ep.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", ep.addr)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("%s endpoint: %w", ep.what, err)
		}
		*ep.ln = ln
	}
	return l, nil
}

// Close closes the listeners that are open (Run's servers close them
// themselves when ctx is done).
func (l *Listeners) Close() {
	for _, ln := range []net.Listener{l.health, l.metrics, l.debug} {
		if ln != nil {
			ln.Close()
		}
	}
}

// HealthAddr is where the health endpoint listens, or "".
func (l *Listeners) HealthAddr() string { return addrOf(l.health) }

// MetricsAddr is where the metrics endpoint listens, or "".
func (l *Listeners) MetricsAddr() string { return addrOf(l.metrics) }

// DebugAddr is where the profiler endpoint listens, or "".
func (l *Listeners) DebugAddr() string { return addrOf(l.debug) }

// profiler serves Go's runtime profiles under /debug/pprof/, as Felix's
// debugPort does: `go tool pprof http://ADDR/debug/pprof/profile`.
func profiler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// Run serves health, metrics and the profiler on their endpoints until ctx
// is done, then shuts each down (a second's grace for requests in flight).
// Its goroutines are counted in wg; a server that fails is logged.
func (l *Listeners) Run(ctx context.Context, wg *sync.WaitGroup, health, metrics http.Handler, log *slog.Logger) {
	for _, srv := range []struct {
		ln net.Listener
		h  http.Handler
	}{{l.health, health}, {l.metrics, metrics}, {l.debug, profiler()}} {
		if srv.ln == nil {
			continue
		}
		// No write timeout: a CPU profile takes as long as it was asked to.
		hs := &http.Server{Handler: srv.h, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := hs.Serve(srv.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP endpoint failed", "addr", srv.ln.Addr().String(), "err", err)
			}
		}()
		go func() {
			defer wg.Done()
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = hs.Shutdown(sctx)
		}()
	}
}
