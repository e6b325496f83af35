package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/version"
)

// DefaultConfigFile is where the CLI looks for its datastore when neither a
// flag nor ETCD_ENDPOINTS says; the lab writes it. Same format as calicoctl's
// /etc/calico/calicoctl.cfg.
const DefaultConfigFile = datastore.DefaultConfigFile

// globals are the flags every datastore command shares.
type globals struct {
	ds        datastore.Flags
	timeout   time.Duration
	out, errw io.Writer
	in        io.Reader
	// ctx is the running command's context (cmd.Context()): the contexts of
	// datastore requests derive from it, so cancelling it (Ctrl-C) ends them.
	ctx context.Context
}

// NewRootCommand builds the whole command tree. Output goes to out and errw,
// "-" manifests are read from in.
func NewRootCommand(in io.Reader, out, errw io.Writer) *cobra.Command {
	g := &globals{in: in, out: out, errw: errw}
	root := &cobra.Command{
		Use:   "tortie",
		Short: "tortie: container, VM and host networking with network policy",
		Long: `tortie manages networking and network policy resources: Calico's
projectcalico.org/v3 kinds, stored in etcd exactly as Calico stores them.

The datastore is found, in order, from --etcd-endpoints, ETCD_ENDPOINTS,
the config file, or http://127.0.0.1:2379. The config file is --config, else
` + DefaultConfigFile + ` if it exists, else calicoctl's ` + datastore.CalicoConfigFile + `
if it exists (calicoctl's format either way: etcdEndpoints, etcdUsername,
etcdPassword, etcdCertFile/etcdKeyFile/etcdCACertFile or the PEM inline as
etcdCert/etcdKey/etcdCACert). TLS: --etcd-cert/--etcd-key/--etcd-ca or
ETCD_CERT_FILE/ETCD_KEY_FILE/ETCD_CA_CERT_FILE, else the config file; user
and password: ETCD_USERNAME/ETCD_PASSWORD, else the config file; each
setting on its own. DATASTORE_TYPE (or the file's datastoreType), if set,
must be etcdv3. "tortie datastore config" shows what was found and where.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get().String(),
		// Every subcommand runs this (none has a PersistentPreRun of its own).
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			g.ctx = cmd.Context()
			return nil
		},
	}
	root.SetVersionTemplate("tortie {{.Version}}\n")
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errw)
	pf := root.PersistentFlags()
	g.ds.Bind(pf.StringVar)
	pf.DurationVar(&g.timeout, "request-timeout", 2*time.Minute, "give up on the datastore after this long")

	root.AddCommand(
		newWriteCommand(g, client.OpCreate),
		newWriteCommand(g, client.OpApply),
		newWriteCommand(g, client.OpReplace),
		newDeleteCommand(g),
		newGetCommand(g),
		newLabelCommand(g),
		newPatchCommand(g),
		newValidateCommand(g),
		newVersionCommand(g),
		newDatastoreCommand(g),
		newIPAMCommand(g),
		newNodeCommand(g),
		newPolicyCommand(g),
		newFlowsCommand(g),
		newFlowsServeCommand(g, "ui"),
		newLabCommand(g),
	)
	return root
}

// Main runs the CLI and returns the process exit status.
func Main(args []string) int {
	root := NewRootCommand(os.Stdin, os.Stdout, os.Stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	return 0
}

// pingTimeout bounds the reachability check every command makes first.
const pingTimeout = 10 * time.Second

// configFiles are the config files read when --config is not given;
// empty ones are datastore.Resolve's defaults (tests point them elsewhere).
var configFiles struct{ def, fallback string }

// resolve finds the datastore from the flags, the environment and the
// config files.
func (g *globals) resolve() (*datastore.Resolved, error) {
	return datastore.Resolve(datastore.Sources{Flags: g.ds, DefaultConfigFile: configFiles.def, FallbackConfigFile: configFiles.fallback})
}

// connect opens the datastore. The returned close function must be called.
func (g *globals) connect() (*client.Client, func(), error) {
	return g.connectUnder(g.parent())
}

// connectUnder is connect with the context that bounds the check that the
// datastore answers.
func (g *globals) connectUnder(parent context.Context) (*client.Client, func(), error) {
	ds, err := g.resolve()
	if err != nil {
		return nil, nil, err
	}
	be, err := datastore.New(ds.Config)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to the %w", ds.WrapError(err))
	}
	ctx, cancel := context.WithTimeout(parent, min(g.timeout, pingTimeout))
	defer cancel()
	if err := be.Ping(ctx); err != nil {
		be.Close()
		if err := parent.Err(); err != nil {
			return nil, nil, fmt.Errorf("connecting to the datastore: %w", err) // interrupted
		}
		return nil, nil, fmt.Errorf("%w\n(or start one on this machine with `tortie datastore serve`)", ds.WrapError(err))
	}
	return client.New(be), func() { be.Close() }, nil
}

func (g *globals) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(g.parent(), g.timeout)
}

// parent is the command's context; Background only outside a command run.
func (g *globals) parent() context.Context {
	if g.ctx == nil {
		return context.Background()
	}
	return g.ctx
}

// session is connect and context together, for a command's whole run; done
// releases both.
func (g *globals) session() (*client.Client, context.Context, func(), error) {
	c, closeFn, err := g.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := g.context()
	return c, ctx, func() { cancel(); closeFn() }, nil
}

// pendingSession is a session being opened while the command does other
// work: wait takes it, discard gives it up; discard after wait does nothing.
type pendingSession struct {
	done    chan struct{}
	cancel  context.CancelFunc
	c       *client.Client
	closeFn func()
	err     error
	taken   bool
}

// sessionInBackground starts opening what session opens. Connecting (a TCP
// and an HTTP/2 handshake, the datastore's status) then overlaps the
// command's own work, such as reading and checking manifests; its outcome,
// an error included, counts only when the command waits for it.
func (g *globals) sessionInBackground() *pendingSession {
	ctx, cancel := context.WithCancel(g.parent())
	p := &pendingSession{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(p.done)
		p.c, p.closeFn, p.err = g.connectUnder(ctx)
	}()
	return p
}

// wait returns what session would have.
func (p *pendingSession) wait(g *globals) (*client.Client, context.Context, func(), error) {
	p.taken = true
	<-p.done
	if p.err != nil {
		p.cancel()
		return nil, nil, nil, p.err
	}
	ctx, cancel := g.context()
	return p.c, ctx, func() { cancel(); p.closeFn(); p.cancel() }, nil
}

// discard gives the session up without waiting for it, and closes it once
// it is open.
func (p *pendingSession) discard() {
	if p.taken {
		return
	}
	p.taken = true
	p.cancel()
	go func() {
		<-p.done
		if p.err == nil {
			p.closeFn()
		}
	}()
}
