// Command tortie is the CLI: resources, IPAM, node status, the datastore and the lab.
package main

import (
	"os"

	"github.com/tortie/tortie/pkg/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
