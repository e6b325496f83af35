package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
)

var writeHelp = map[client.Op][2]string{
	client.OpCreate:  {"Create resources from manifests; fails if any exists", "created"},
	client.OpApply:   {"Create resources from manifests, or replace them if they exist", "applied"},
	client.OpReplace: {"Replace existing resources with the manifests' versions; fails if any is missing", "replaced"},
}

// newWriteCommand builds create, apply and replace, which differ only in the
// batch operation.
func newWriteCommand(g *globals, op client.Op) *cobra.Command {
	var files []string
	help := writeHelp[op]
	cmd := &cobra.Command{
		Use:   op.String() + " -f FILE|DIR|- [-f ...]",
		Short: help[0],
		Long: help[0] + `.

A manifest is YAML or JSON with one or more documents (YAML documents are
separated by "---"); a directory means every *.yaml, *.yml and *.json file in it.
Every document is decoded, defaulted and validated before anything is written,
and all are written in one datastore transaction when they fit in one: a
manifest with one bad document writes nothing. Errors name the file, the
document (counted from 1) and the field.

Besides projectcalico.org/v3 kinds, a manifest may hold Kubernetes
networking.k8s.io/v1 NetworkPolicy and v1 Namespace objects: they are stored
as Calico stores them for a Kubernetes cluster (policy knp.default.<name> in
tier default, order 1000; namespace profile kns.<name> whose labels apply to
the namespace's endpoints).`,
		Example: "  tortie " + op.String() + " -f policy.yaml\n  tortie " + op.String() + " -f manifests/\n  cat pool.yaml | tortie " + op.String() + " -f -",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			docs, err := readManifests(files, g.in)
			if err != nil {
				return err
			}
			if len(docs) == 0 {
				return errors.New("the manifest has no documents")
			}
			if err := decodeDocuments(docs, decodeAndValidate); err != nil {
				return err
			}
			c, ctx, done, err := g.session()
			if err != nil {
				return err
			}
			defer done()
			objs := make([]v3.Resource, len(docs))
			for i, d := range docs {
				objs[i] = d.Obj
			}
			if _, err := c.Batch(ctx, op, objs); err != nil {
				return describeBatchError(docs, err)
			}
			fmt.Fprintln(g.out, successMessage(help[1], len(objs), objs))
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory, or - for standard input (repeatable)")
	return cmd
}

// successMessage follows calicoctl: the kind is named when all documents are
// of one kind.
func successMessage(verb string, n int, objs []v3.Resource) string {
	kind := ""
	for i, o := range objs {
		k := o.GetObjectKind().GroupVersionKind().Kind
		if i == 0 {
			kind = k
		} else if k != kind {
			kind = ""
			break
		}
	}
	if kind != "" {
		return fmt.Sprintf("Successfully %s %d '%s' resource(s)", verb, n, kind)
	}
	return fmt.Sprintf("Successfully %s %d resource(s)", verb, n)
}

// describeBatchError rewrites the client's document indexes as file and
// document names.
func describeBatchError(docs []*Document, err error) error {
	var derrs client.DocErrors
	if errors.As(err, &derrs) {
		var msgs []string
		for _, de := range derrs {
			msgs = append(msgs, fmt.Sprintf("%s: %v", docs[de.Index].Describe(), de.Err))
		}
		return &DocumentErrors{Errs: msgs, Total: len(docs)}
	}
	var be *client.BatchError
	if errors.As(err, &be) {
		msg := fmt.Sprintf("%s: %v", docs[be.Failed].Describe(), be.Err)
		if len(be.Written) == 0 {
			return fmt.Errorf("%s\nnothing was written", msg)
		}
		var names []string
		for _, i := range be.Written {
			names = append(names, "  "+docs[i].Describe())
		}
		return fmt.Errorf("%s\nthe manifest was too large for one transaction; these %d document(s) were written before the failure:\n%s", msg, len(be.Written), strings.Join(names, "\n"))
	}
	return err
}

func newValidateCommand(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "validate -f FILE|DIR|-",
		Short: "Check manifests offline: decoding, defaulting and validation, no datastore",
		Long: `Check manifests without touching the datastore: every document is decoded
strictly (unknown fields are errors), defaulted and validated. Exit status is
non-zero when any document is invalid; every problem is listed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			docs, err := readManifests(files, g.in)
			if err != nil {
				return err
			}
			if err := decodeDocuments(docs, decodeAndValidate); err != nil {
				var de *DocumentErrors
				if errors.As(err, &de) {
					return fmt.Errorf("%s\n%d of %d document(s) invalid", strings.Join(de.Errs, "\n"), len(de.Errs), de.Total)
				}
				return err
			}
			fmt.Fprintf(g.out, "%d document(s) valid\n", len(docs))
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory, or - for standard input (repeatable)")
	return cmd
}

func newDeleteCommand(g *globals) *cobra.Command {
	var (
		files         []string
		namespace     string
		skipNotExists bool
	)
	cmd := &cobra.Command{
		Use:   "delete (-f FILE|DIR|- | KIND NAME...)",
		Short: "Delete resources named in manifests or on the command line",
		Long: `Delete resources, either every resource a manifest names (all in one
transaction: if one is missing nothing is deleted, unless --skip-not-exists), or
KIND NAME... given on the command line. A resourceVersion in a manifest makes
the delete conditional on it.`,
		Example: "  tortie delete -f policy.yaml\n  tortie delete ippool pool-1\n  tortie delete networkpolicy web -n prod",
		RunE: func(cmd *cobra.Command, args []string) error {
			var docs []*Document
			switch {
			case len(files) > 0 && len(args) > 0:
				return errors.New("give either -f or KIND NAME, not both")
			case len(files) > 0:
				var err error
				if docs, err = readManifests(files, g.in); err != nil {
					return err
				}
				if err := decodeDocuments(docs, decodeOnly); err != nil {
					return err
				}
			case len(args) >= 2:
				k, err := v3.LookupKind(args[0])
				if err != nil {
					return err
				}
				ns := namespaceFor(k, namespace)
				for i, name := range args[1:] {
					obj := k.NewObject()
					obj.SetName(name)
					obj.SetNamespace(ns)
					docs = append(docs, &Document{Source: "command line", Index: i + 1, Obj: obj})
				}
			default:
				return errors.New("give -f FILE or KIND NAME")
			}
			c, ctx, done, err := g.session()
			if err != nil {
				return err
			}
			defer done()
			all := make([]v3.Resource, len(docs))
			for i, d := range docs {
				all[i] = d.Obj
			}
			if skipNotExists {
				if docs, err = existingOnly(ctx, c, docs); err != nil {
					return err
				}
			}
			objs := make([]v3.Resource, len(docs))
			for i, d := range docs {
				objs[i] = d.Obj
			}
			if _, err := c.Batch(ctx, client.OpDelete, objs); err != nil {
				return describeBatchError(docs, err)
			}
			fmt.Fprintln(g.out, successMessage("deleted", len(objs), all))
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory, or - for standard input (repeatable)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of a namespaced kind (default \"default\")")
	cmd.Flags().BoolVar(&skipNotExists, "skip-not-exists", false, "do not fail on resources that do not exist")
	return cmd
}

// existingOnly drops the documents naming resources that do not exist.
func existingOnly(ctx context.Context, c *client.Client, docs []*Document) ([]*Document, error) {
	var out []*Document
	for _, d := range docs {
		_, err := c.Get(ctx, v3.KindOf(d.Obj), d.Obj.GetNamespace(), d.Obj.GetName())
		switch {
		case errors.Is(err, datastore.ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("%s: %w", d.Describe(), err)
		default:
			out = append(out, d)
		}
	}
	return out, nil
}

// namespaceFor is calicoctl's rule: a namespaced kind is in the namespace
// given, else "default"; other kinds have none.
func namespaceFor(k *v3.KindInfo, ns string) string {
	switch {
	case !k.Namespaced:
		return ""
	case ns == "":
		return "default"
	}
	return ns
}
