// Command tortie is the CLI: resources, IPAM, node status, the datastore and the lab.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tortie/tortie/pkg/cli"
)

// main runs the command under one context that Ctrl-C (SIGINT) or SIGTERM
// cancels; every command reaches it as cmd.Context(). The signals stay
// caught until the command returns, so that a second Ctrl-C does not cut
// short a command's cleanup (`lab up` removing what it had made).
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := cli.NewRootCommand(os.Stdin, os.Stdout, os.Stderr)
	root.SetArgs(os.Args[1:])
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
