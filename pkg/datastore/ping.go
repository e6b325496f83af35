package datastore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Ping checks that at least one endpoint answers, and says why none does:
// a refused connection shows at once, instead of after the request retries
// give up. Commands call it first so an operator with no datastore running
// learns that in a second, with the address they need to fix.
func (e *Etcd) Ping(ctx context.Context) error {
	var errs []error
	for _, ep := range e.cfg.Endpoints {
		err := e.pingOne(ctx, ep)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	return fmt.Errorf("%w: no etcd endpoint answers: %w", ErrUnavailable, errors.Join(errs...))
}

func (e *Etcd) pingOne(ctx context.Context, endpoint string) error {
	hostport := endpoint
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		hostport = u.Host
	}
	if !strings.Contains(hostport, ":") {
		hostport += ":2379"
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			return oe.Err
		}
		return err
	}
	conn.Close()
	if _, err := e.cli.Status(ctx, endpoint); err != nil {
		return translate(err)
	}
	return nil
}
