// Package cli is the `tortie` command line: calicoctl's verbs and output on
// tortie's client. Commands parse flags, read manifests and print; all rules
// about resources live in pkg/apis/v3 and pkg/client.
package cli
