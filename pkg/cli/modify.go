package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/version"
)

func newLabelCommand(g *globals) *cobra.Command {
	var (
		namespace string
		overwrite bool
		remove    bool
	)
	cmd := &cobra.Command{
		Use:   "label KIND NAME (key=value [--overwrite] | key --remove)",
		Short: "Set or remove a label on a resource",
		Long: `Set a label (key=value) or remove one (key --remove) on one resource.
Changing the value of a label that exists needs --overwrite. The change is a
compare-and-swap on the resource's revision, retried if someone else wrote it.`,
		Example: "  tortie label node h1 rack=r1\n  tortie label node h1 rack=r2 --overwrite\n  tortie label node h1 rack --remove",
		Args:    cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := v3.LookupKind(args[0])
			if err != nil {
				return err
			}
			name := args[1]
			ch := client.LabelChange{Remove: remove, Overwrite: overwrite}
			if remove {
				if overwrite {
					return errors.New("--overwrite and --remove cannot be used together")
				}
				if strings.Contains(args[2], "=") {
					return fmt.Errorf("with --remove give only the label key, not %q", args[2])
				}
				ch.Key = args[2]
			} else {
				kv := strings.SplitN(args[2], "=", 2)
				if len(kv) != 2 {
					return fmt.Errorf("invalid label %q: want key=value (or key --remove)", args[2])
				}
				ch.Key, ch.Value = kv[0], kv[1]
				if errs := v3.ValidateLabels("metadata.labels", map[string]string{ch.Key: ch.Value}); len(errs) > 0 {
					return errs
				}
			}
			ns := namespaceFor(k, namespace)
			c, ctx, done, err := g.session()
			if err != nil {
				return err
			}
			defer done()
			before, err := c.Get(ctx, k, ns, name)
			if err != nil {
				return err
			}
			_, had := before.GetLabels()[ch.Key]
			if _, err := c.Label(ctx, k, ns, name, ch); err != nil {
				return err
			}
			switch {
			case remove:
				fmt.Fprintf(g.out, "Successfully removed label %s from %s %s\n", ch.Key, args[0], name)
			case had:
				fmt.Fprintf(g.out, "Successfully updated label %s on %s %s\n", ch.Key, args[0], name)
			default:
				fmt.Fprintf(g.out, "Successfully set label %s on %s %s\n", ch.Key, args[0], name)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of a namespaced kind (default \"default\")")
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "change the value of an existing label")
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the label")
	return cmd
}

func newPatchCommand(g *globals) *cobra.Command {
	var (
		namespace string
		patch     string
		patchType string
	)
	cmd := &cobra.Command{
		Use:   "patch KIND NAME -p PATCH [--type strategic|merge|json]",
		Short: "Change a resource with a merge patch or a JSON patch",
		Long: `Patch one resource in place. --type (-t) says what PATCH is:

  strategic  calicoctl's default: applied as a JSON merge patch, which is what
             a strategic merge patch does to Calico's types (they carry no
             strategic-merge directives: objects merge, lists are replaced)
  merge      a JSON merge patch (RFC 7386): objects merge, null removes a
             field, anything else replaces
  json       a JSON patch (RFC 6902): a list of operations (add, remove,
             replace, move, copy, test) on JSON pointers; a failing one,
             a test included, changes nothing

The result is validated like a manifest before it is written, with a
compare-and-swap on the revision read (retried if someone else wrote first).
A patch cannot change the kind, name or namespace.`,
		Example: `  tortie patch ippool pool-1 -p '{"spec":{"natOutgoing":true}}'
  tortie patch gnp allow-dns -p '{"spec":{"order":null}}'
  tortie patch ippool pool-1 --type json -p '[{"op":"replace","path":"/spec/vxlanMode","value":"Always"}]'
  tortie patch node h1 -t json -p '[{"op":"add","path":"/metadata/labels/rack","value":"r1"}]'`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if patch == "" {
				return errors.New("give the patch with -p PATCH")
			}
			var ops []jsonPatchOp
			switch patchType {
			case "strategic", "merge":
			case "json":
				var err error
				if ops, err = parseJSONPatch([]byte(patch)); err != nil {
					return err
				}
			default:
				return fmt.Errorf("--type %q: want strategic, merge or json", patchType)
			}
			k, err := v3.LookupKind(args[0])
			if err != nil {
				return err
			}
			ns := namespaceFor(k, namespace)
			c, ctx, done, err := g.session()
			if err != nil {
				return err
			}
			defer done()
			if ops != nil {
				err = jsonPatchResource(ctx, c, k, ns, args[1], ops)
			} else {
				_, err = c.Patch(ctx, k, ns, args[1], []byte(patch))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "Successfully patched 1 '%s' resource\n", k.Kind)
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of a namespaced kind (default \"default\")")
	cmd.Flags().StringVarP(&patch, "patch", "p", "", "the patch, JSON")
	cmd.Flags().StringVarP(&patchType, "type", "t", "strategic", "what the patch is: strategic (as merge), merge (RFC 7386) or json (RFC 6902)")
	return cmd
}

// patchRetries bounds jsonPatchResource's read-patch-write rounds lost to
// another writer.
const patchRetries = 5

// jsonPatchResource applies an RFC 6902 patch to one resource: read, patch
// its JSON, decode strictly, write with a compare-and-swap on the revision
// read, again from the read when someone else wrote first.
func jsonPatchResource(ctx context.Context, c *client.Client, k *v3.KindInfo, ns, name string, ops []jsonPatchOp) error {
	for attempt := 0; ; attempt++ {
		cur, err := c.Get(ctx, k, ns, name)
		if err != nil {
			return err
		}
		b, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		var doc any
		if err := json.Unmarshal(b, &doc); err != nil {
			return err
		}
		if doc, err = applyJSONPatch(doc, ops); err != nil {
			return err
		}
		if b, err = json.Marshal(doc); err != nil {
			return err
		}
		next, err := v3.Decode(b)
		if err != nil {
			return fmt.Errorf("patched %s %q: %w", k.Kind, name, err)
		}
		if v3.KindOf(next) != k || next.GetName() != cur.GetName() || next.GetNamespace() != cur.GetNamespace() {
			return errors.New("a patch cannot change kind, apiVersion, metadata.name or metadata.namespace")
		}
		next.SetResourceVersion(cur.GetResourceVersion())
		_, err = c.Update(ctx, next)
		if errors.Is(err, datastore.ErrConflict) && attempt+1 < patchRetries {
			continue
		}
		return err
	}
}

func newVersionCommand(g *globals) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client version, and the cluster's when the datastore is reachable",
		Long: `Print the client's version and the git commit it was built from (read
from the build information go embeds; "-dirty" when the checkout had
uncommitted changes, "unknown" when built without VCS stamping), then, from
the datastore's ClusterInformation, the cluster's version, type and GUID.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			fmt.Fprintf(g.out, "Client Version:    %s\n", info.Version)
			fmt.Fprintf(g.out, "Git commit:        %s\n", info.CommitString())
			if clientOnly {
				return nil
			}
			c, ctx, done, err := g.session()
			if err != nil {
				return err
			}
			defer done()
			k, _ := v3.KindByKind(v3.KindClusterInformation)
			r, err := c.Get(ctx, k, "", "default")
			if errors.Is(err, datastore.ErrNotFound) {
				fmt.Fprintln(g.out, "Cluster:           not initialised (nothing written yet)")
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading cluster information: %w", err)
			}
			ci := r.(*v3.ClusterInformation)
			fmt.Fprintf(g.out, "Cluster Version:   %s\n", orUnknown(ci.Spec.CalicoVersion))
			fmt.Fprintf(g.out, "Cluster Type:      %s\n", orUnknown(ci.Spec.ClusterType))
			fmt.Fprintf(g.out, "Cluster GUID:      %s\n", ci.Spec.ClusterGUID)
			fmt.Fprintf(g.out, "Datastore ready:   %v\n", ci.Spec.DatastoreReady != nil && *ci.Spec.DatastoreReady)
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print the client version only")
	return cmd
}

// orUnknown is calicoctl's placeholder for an unset version or type.
func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func newDatastoreCommand(g *globals) *cobra.Command {
	ds := &cobra.Command{Use: "datastore", Short: "Run or inspect the datastore"}
	var dataDir, listen string
	var noFsync bool
	serve := &cobra.Command{
		Use:   "serve --data-dir DIR [--listen-client URL]",
		Short: "Run an embedded single-member etcd for one machine",
		Long: `Become tortie-datastore (found next to tortie or on the PATH; make build
builds both): an embedded etcd v3 server with one member and no peer port,
serving from --data-dir until SIGINT or SIGTERM. See tortie-datastore --help.`,
		Example: "  tortie datastore serve --data-dir /var/lib/tortie/etcd\n  tortie datastore serve --data-dir /tmp/t2 --listen-client http://127.0.0.1:23790",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return errors.New("--data-dir is required")
			}
			bin, err := siblingProgram("tortie-datastore")
			if err != nil {
				return err
			}
			// Become the server: signals, exit status and output are its.
			argv := []string{bin, "--data-dir", dataDir, "--listen-client", listen}
			if noFsync {
				argv = append(argv, "--unsafe-no-fsync")
			}
			return syscall.Exec(bin, argv, os.Environ())
		},
	}
	serve.Flags().StringVar(&dataDir, "data-dir", "", "directory for the datastore's files (created if missing)")
	serve.Flags().StringVar(&listen, "listen-client", "http://127.0.0.1:2379", "URL clients connect to")
	serve.Flags().BoolVar(&noFsync, "unsafe-no-fsync", false, datastore.UnsafeNoFsyncHelp)
	config := &cobra.Command{
		Use:   "config",
		Short: "Show the datastore settings tortie would use, and where each came from",
		Long: `Show the datastore settings every command would use: the config file read
(--config, else ` + datastore.DefaultConfigFile + `, else calicoctl's ` + datastore.CalicoConfigFile + `),
the endpoints, TLS files or inline PEM, and the user, each with where it came
from (flag, environment variable, config file or default). The password and
the PEM are never shown. Nothing is sent to the datastore.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := g.resolve()
			if err != nil {
				return err
			}
			printDatastoreConfig(g.out, r)
			return nil
		},
	}
	ds.AddCommand(serve, config)
	return ds
}

// printDatastoreConfig is `tortie datastore config`.
func printDatastoreConfig(w io.Writer, r *datastore.Resolved) {
	file := r.ConfigFile + " (not present)"
	switch {
	case r.ConfigFileRead && r.ConfigFileFallback:
		file = r.ConfigFile + " (calicoctl's, read because " + datastore.DefaultConfigFile + " is not present)"
	case r.ConfigFileRead:
		file = r.ConfigFile
	}
	from := func(o datastore.Origin) string {
		if o.Source == datastore.FromDefault {
			return "default"
		}
		return "from " + o.String()
	}
	fmt.Fprintf(w, "Config file:   %s\n", file)
	fmt.Fprintf(w, "Endpoints:     %s (%s)\n", strings.Join(r.Config.Endpoints, ","), from(r.Origins.Endpoints))
	for _, s := range []struct {
		name, shown, secret string // shown is printed; secret only said to be set
		from                datastore.Origin
	}{
		{"Certificate:", r.Config.CertFile, r.Config.CertPEM, r.Origins.Cert},
		{"Key:", r.Config.KeyFile, r.Config.KeyPEM, r.Origins.Key},
		{"CA:", r.Config.CAFile, r.Config.CAPEM, r.Origins.CA},
		{"User:", r.Config.Username, "", r.Origins.Username},
		{"Password:", "", r.Config.Password, r.Origins.Password},
	} {
		switch {
		case s.shown != "":
			fmt.Fprintf(w, "%-14s %s (%s)\n", s.name, s.shown, from(s.from))
		case s.secret != "" && s.name == "Password:":
			fmt.Fprintf(w, "%-14s set (%s)\n", s.name, from(s.from))
		case s.secret != "":
			fmt.Fprintf(w, "%-14s inline PEM (%s)\n", s.name, from(s.from))
		default:
			fmt.Fprintf(w, "%-14s none\n", s.name)
		}
	}
}

// siblingProgram finds a tortie program next to this executable, else on
// the PATH.
func siblingProgram(name string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is neither next to tortie nor on the PATH (make build builds it into bin/)", name)
	}
	return p, nil
}
