// Package serve opens and serves the HTTP endpoints of tortie's
// long-running binaries (the agent, the Kubernetes controllers): one for
// health (/liveness, /readiness, ...) and one for Prometheus metrics, each
// on an address of its own or nowhere.
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
	"sync"
	"time"
)

// Listeners are the opened health and metrics endpoints; either may be
// absent.
type Listeners struct {
	health, metrics net.Listener
}

// Listen opens the health and metrics endpoints ("" : that one nowhere).
// When the second cannot be opened the first is closed again.
func Listen(healthAddr, metricsAddr string) (*Listeners, error) {
	l := &Listeners{}
	var err error
	if healthAddr != "" {
		if l.health, err = net.Listen("tcp", healthAddr); err != nil {
			return nil, fmt.Errorf("health endpoint: %w", err)
		}
	}
	if metricsAddr != "" {
		if l.metrics, err = net.Listen("tcp", metricsAddr); err != nil {
			if l.health != nil {
				l.health.Close()
			}
			return nil, fmt.Errorf("metrics endpoint: %w", err)
		}
	}
	return l, nil
}

// HealthAddr is where the health endpoint listens, or "".
func (l *Listeners) HealthAddr() string { return addrOf(l.health) }

// MetricsAddr is where the metrics endpoint listens, or "".
func (l *Listeners) MetricsAddr() string { return addrOf(l.metrics) }

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// Run serves health and metrics on their endpoints until ctx is done, then
// shuts each down (a second's grace for requests in flight). Its goroutines
// are counted in wg; a server that fails is logged.
func (l *Listeners) Run(ctx context.Context, wg *sync.WaitGroup, health, metrics http.Handler, log *slog.Logger) {
	for _, srv := range []struct {
		ln net.Listener
		h  http.Handler
	}{{l.health, health}, {l.metrics, metrics}} {
		if srv.ln == nil {
			continue
		}
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
