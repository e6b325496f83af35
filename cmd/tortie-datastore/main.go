// Command tortie-datastore runs tortie's one-machine datastore: an embedded
// single-member etcd v3 server (no peer port). `tortie datastore serve`
// runs this program; it is its own binary so that the tortie CLI, which
// every `tortie apply` starts, does not link (and initialise) etcd's server.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
)

func main() {
	if err := newCommand(os.Stdout).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tortie-datastore:", err)
		os.Exit(1)
	}
}

func newCommand(out io.Writer) *cobra.Command {
	var cfg embedded.ServeConfig
	cmd := &cobra.Command{
		Use:   "tortie-datastore --data-dir DIR [--listen-client URL]",
		Short: "Run an embedded single-member etcd for one machine",
		Long: `Run an embedded etcd v3 server: one member, no peer port, so several can run
side by side with different client URLs. It stores data in --data-dir and
serves until interrupted (SIGINT or SIGTERM), then shuts down cleanly.
` + "`tortie datastore serve`" + ` runs this program with the same flags.`,
		Example:       "  tortie-datastore --data-dir /var/lib/tortie/etcd\n  tortie-datastore --data-dir /tmp/t2 --listen-client http://127.0.0.1:23790",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.DataDir == "" {
				return errors.New("--data-dir is required")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := embedded.Serve(ctx, cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "tortie datastore serving on %s (data in %s)\n", srv.Endpoint(), cfg.DataDir)
			select {
			case <-ctx.Done():
			case <-srv.Done():
			}
			return srv.Close()
		},
	}
	cmd.Flags().StringVar(&cfg.DataDir, "data-dir", "", "directory for the datastore's files (created if missing)")
	cmd.Flags().StringVar(&cfg.ListenClientURL, "listen-client", "http://127.0.0.1:2379", "URL clients connect to")
	cmd.Flags().BoolVar(&cfg.UnsafeNoFsync, "unsafe-no-fsync", false, datastore.UnsafeNoFsyncHelp)
	return cmd
}
