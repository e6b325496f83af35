package datastore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// pingKey is the key Ping reads (a count only): it need not exist, and is
// under /calico/, which a user Calico's etcd roles allow may read.
const pingKey = "/calico/ping"

// Ping checks that at least one endpoint answers, and says why none does:
// a refused connection shows at once, instead of after the request retries
// give up. Commands call it first so an operator with no datastore running
// learns that in a second, with the address they need to fix.
//
// Once a TCP connection to an endpoint opens, one request over the client's
// own connection shows that etcd answers there (and that the credentials
// are good). That is the connection the command's requests then use: a
// status request to the endpoint would open (and close) one more, with its
// own TCP and HTTP/2 handshakes, on the way of every `tortie apply`.
func (e *Etcd) Ping(ctx context.Context) error {
	var errs []error
	for _, ep := range e.cfg.Endpoints {
		err := dial(ctx, ep)
		if err == nil {
			if _, err := e.cli.Get(ctx, pingKey, clientv3.WithSerializable(), clientv3.WithCountOnly()); err != nil {
				return fmt.Errorf("%w: no etcd endpoint answers: %s: %w", ErrUnavailable, strings.Join(e.cfg.Endpoints, ", "), translate(err))
			}
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	return fmt.Errorf("%w: no etcd endpoint answers: %w", ErrUnavailable, errors.Join(errs...))
}

// dial opens and closes a TCP connection to endpoint.
func dial(ctx context.Context, endpoint string) error {
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
	return conn.Close()
}
