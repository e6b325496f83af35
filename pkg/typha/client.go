package typha

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/tortie/tortie/pkg/datastore"
)

// ClientConfig says how an agent reaches its typhas.
type ClientConfig struct {
	// Addrs are the typhas (host:port); every connection tries them in a
	// new random order, so agents spread over the typhas and move to
	// another when one goes away.
	Addrs []string
	// TLS, when set, is the client's TLS (ClientTLS makes one); nil
	// connects over plain TCP.
	TLS *tls.Config
	// Node names this agent in the typha's logs.
	Node string
	// DialTimeout bounds connecting to one typha, TLS and hello included
	// (default 10 s).
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// Client streams from typhas. It holds no state between connections:
// every connection starts with a complete snapshot.
type Client struct {
	cfg ClientConfig
	log *slog.Logger
}

// NewClient checks cfg and returns a client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("typha: no address to connect to")
	}
	for _, a := range cfg.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("typha address %q: %w", a, err)
		}
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Client{cfg: cfg, log: cfg.Logger.With("component", "typha-client")}, nil
}

// Addrs are the typhas the client connects to.
func (c *Client) Addrs() []string { return slices.Clone(c.cfg.Addrs) }

// Stream connects to one of the typhas, asks for prefixes and calls handle
// with every event, prefix given by its index in prefixes: first each
// prefix's snapshot ended by its EventInSync, then every change in order.
// It returns when the connection ends (never with a nil error) or ctx is
// done (ctx.Err()). handle is called from Stream's goroutine; while it
// runs, nothing is read.
func (c *Client) Stream(ctx context.Context, prefixes []string, handle func(i int, ev datastore.WatchEvent)) error {
	conn, r, welcome, err := c.connect(ctx, prefixes)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	who := fmt.Sprintf("typha %s (%s)", conn.RemoteAddr(), welcome.Server)
	c.log.Info("connected to typha", "addr", conn.RemoteAddr().String(), "typha", welcome.Server)
	// The server's prefix index → ours.
	ours := make([]int, len(welcome.Prefixes))
	for i, p := range welcome.Prefixes {
		ours[i] = slices.Index(prefixes, p)
	}
	idle := 3 * time.Duration(welcome.PingMillis) * time.Millisecond
	if idle <= 0 {
		idle = 30 * time.Second
	}
	var buf []byte
	for {
		if err := conn.SetReadDeadline(time.Now().Add(idle)); err != nil {
			return err
		}
		typ, p, nb, err := readFrame(r, buf)
		buf = nb
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("%s: nothing heard for %v", who, idle)
			}
			return fmt.Errorf("%s: connection lost: %w", who, err)
		}
		switch typ {
		case frameEvent:
			i, ev, err := decodeEvent(p)
			if err != nil {
				return fmt.Errorf("%s: %w", who, err)
			}
			if i >= len(ours) || ours[i] < 0 {
				return fmt.Errorf("%s: event of prefix %d, which was not asked for", who, i)
			}
			handle(ours[i], ev)
		case framePing:
		case frameError:
			return fmt.Errorf("%s: %s", who, errorText(p))
		default:
			return fmt.Errorf("%s: frame of unknown type %d", who, typ)
		}
	}
}

func errorText(p []byte) string {
	var m errorMsg
	if err := json.Unmarshal(p, &m); err != nil || m.Error == "" {
		return fmt.Sprintf("unreadable error frame %q", p)
	}
	return m.Error
}

// connect tries the typhas in a random order and returns the first that
// welcomes the hello.
func (c *Client) connect(ctx context.Context, prefixes []string) (net.Conn, *bufio.Reader, *welcomeMsg, error) {
	addrs := slices.Clone(c.cfg.Addrs)
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	var errs []string
	for _, addr := range addrs {
		conn, r, w, err := c.dial(ctx, addr, prefixes)
		if err == nil {
			return conn, r, w, nil
		}
		if ctx.Err() != nil {
			return nil, nil, nil, ctx.Err()
		}
		errs = append(errs, err.Error())
	}
	return nil, nil, nil, fmt.Errorf("no typha reachable: %s", strings.Join(errs, "; "))
}

func (c *Client) dial(ctx context.Context, addr string, prefixes []string) (net.Conn, *bufio.Reader, *welcomeMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("typha %s: %w", addr, err)
	}
	fail := func(err error) (net.Conn, *bufio.Reader, *welcomeMsg, error) {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("typha %s: %w", addr, err)
	}
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return fail(err)
	}
	if c.cfg.TLS != nil {
		cfg := c.cfg.TLS
		if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(fmt.Errorf("TLS: %w", err))
		}
		conn = tc
	}
	if _, err := conn.Write(jsonFrame(frameHello, helloMsg{Version: ProtocolVersion, Node: c.cfg.Node, Prefixes: prefixes})); err != nil {
		return fail(fmt.Errorf("sending the hello: %w", err))
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	typ, p, _, err := readFrame(r, nil)
	if err != nil {
		return fail(fmt.Errorf("reading the welcome: %w", err))
	}
	switch typ {
	case frameWelcome:
	case frameError:
		return fail(errors.New(errorText(p)))
	default:
		return fail(fmt.Errorf("answered the hello with a frame of type %d", typ))
	}
	var w welcomeMsg
	if err := json.Unmarshal(p, &w); err != nil {
		return fail(fmt.Errorf("welcome: %w", err))
	}
	if w.Version != ProtocolVersion {
		return fail(fmt.Errorf("speaks protocol version %d, this agent %d", w.Version, ProtocolVersion))
	}
	for _, p := range prefixes {
		if !slices.Contains(w.Prefixes, p) {
			return fail(fmt.Errorf("does not serve prefix %s", p))
		}
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return fail(err)
	}
	return conn, r, &w, nil
}
