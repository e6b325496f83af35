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
	var mf manifestFlags
	help := writeHelp[op]
	cmd := &cobra.Command{
		Use:   op.String() + " -f FILE|DIR|- [-f ...]",
		Short: help[0],
		Long: help[0] + `.

A manifest is YAML or JSON with one or more documents (YAML documents are
separated by "---"); a directory means every *.yaml, *.yml and *.json file in it
(and in its subdirectories with -R). A file, directory or standard input with
no resources is an error unless --skip-empty. Every document is decoded, defaulted and validated before anything is written,
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
			pending := g.sessionInBackground()
			defer pending.discard()
			docs, err := mf.read(g.in)
			if err != nil {
				return err
			}
			if len(docs) == 0 { // --skip-empty, and nothing in any source
				fmt.Fprintln(g.out, "No resources specified")
				return nil
			}
			if err := decodeDocuments(docs, decodeAndValidate); err != nil {
				return err
			}
			c, ctx, done, err := pending.wait(g)
			if err != nil {
				return err
			}
			defer done()
			objs := make([]v3.Resource, len(docs))
			for i, d := range docs {
				objs[i] = d.Obj
			}
			// decodeDocuments has defaulted and validated every one.
			if _, err := c.BatchValidated(ctx, op, objs); err != nil {
				return describeBatchError(docs, err)
			}
			fmt.Fprintln(g.out, successMessage(help[1], len(objs), objs))
			return nil
		},
	}
	mf.bind(cmd)
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
	var mf manifestFlags
	cmd := &cobra.Command{
		Use:   "validate -f FILE|DIR|-",
		Short: "Check manifests offline: decoding, defaulting and validation, no datastore",
		Long: `Check manifests without touching the datastore: every document is decoded
strictly (unknown fields are errors), defaulted and validated. Exit status is
non-zero when any document is invalid; every problem is listed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			docs, err := mf.read(g.in)
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
	mf.bind(cmd)
	return cmd
}

func newDeleteCommand(g *globals) *cobra.Command {
	var (
		mf             manifestFlags
		namespace      string
		skipNotExists  bool
		ignoreNotFound bool
	)
	cmd := &cobra.Command{
		Use:   "delete (-f FILE|DIR|- | KIND NAME...)",
		Short: "Delete resources named in manifests or on the command line",
		Long: `Delete resources: every resource a manifest names, or KIND NAME... given on
the command line. Those that exist are deleted together, in one transaction;
as calicoctl and kubectl do, resources that do not exist do not stop the
others: each is reported ("resource does not exist: KIND(NAME)") and the exit
status is 1. With --ignore-not-found they are passed over in silence (exit
status 0); with --skip-not-exists (calicoctl's flag) they count as deleted.
Any other problem (a resourceVersion that no longer matches, a resource that
may not be deleted) deletes nothing. A resourceVersion in a manifest makes the
delete conditional on it.`,
		Example: "  tortie delete -f policy.yaml\n  tortie delete ippool pool-1\n  tortie delete networkpolicy web -n prod\n  tortie delete -f old/ -R --ignore-not-found",
		RunE: func(cmd *cobra.Command, args []string) error {
			var docs []*Document
			switch {
			case len(mf.files) > 0 && len(args) > 0:
				return errors.New("give either -f or KIND NAME, not both")
			case len(mf.files) > 0:
				var err error
				if docs, err = mf.read(g.in); err != nil {
					return err
				}
				if len(docs) == 0 { // --skip-empty, and nothing in any source
					fmt.Fprintln(g.out, "No resources specified")
					return nil
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
					docs = append(docs, &Document{Source: commandLine, Index: i + 1, Obj: obj})
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
			deleted, missing, err := deleteExisting(ctx, c, docs)
			if err != nil {
				return err
			}
			n := len(deleted)
			if skipNotExists {
				n += len(missing) // calicoctl counts what it skipped as deleted
			}
			if n > 0 || len(missing) == 0 {
				fmt.Fprintln(g.out, successMessage("deleted", n, all))
			}
			if len(missing) == 0 || skipNotExists || ignoreNotFound {
				return nil
			}
			msgs := make([]string, len(missing))
			for i, d := range missing {
				msgs[i] = d.notFound()
			}
			return errors.New(strings.Join(msgs, "\n"))
		},
	}
	mf.bind(cmd)
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of a namespaced kind (default \"default\")")
	cmd.Flags().BoolVarP(&skipNotExists, "skip-not-exists", "s", false, "count resources that do not exist as deleted (calicoctl)")
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "pass over resources that do not exist in silence, exit status 0 (kubectl)")
	cmd.MarkFlagsMutuallyExclusive("skip-not-exists", "ignore-not-found")
	return cmd
}

// commandLine is the Source of documents made from KIND NAME arguments.
const commandLine = "command line"

// deleteAttempts bounds the rounds of deleteExisting: each round that
// fails only for resources someone else deleted meanwhile drops them and
// tries again.
const deleteAttempts = 5

// deleteExisting deletes, in one batch, the resources the documents name
// that exist, and returns those documents and the ones naming resources
// that do not. Any error but a missing resource fails the whole batch and
// deletes nothing.
func deleteExisting(ctx context.Context, c *client.Client, docs []*Document) (deleted, missing []*Document, err error) {
	pending := docs
	for attempt := 0; len(pending) > 0; attempt++ {
		objs := make([]v3.Resource, len(pending))
		for i, d := range pending {
			objs[i] = d.Obj
		}
		_, err := c.Batch(ctx, client.OpDelete, objs)
		if err == nil {
			return pending, missing, nil
		}
		gone, ok := onlyNotFound(err)
		if !ok || attempt+1 == deleteAttempts {
			return nil, nil, describeBatchError(pending, err)
		}
		var rest []*Document
		for i, d := range pending {
			if gone[i] {
				missing = append(missing, d)
			} else {
				rest = append(rest, d)
			}
		}
		pending = rest
	}
	return nil, missing, nil
}

// onlyNotFound returns the documents a batch error blames, when every
// one of its errors is a missing resource.
func onlyNotFound(err error) (map[int]bool, bool) {
	var derrs client.DocErrors
	if !errors.As(err, &derrs) || len(derrs) == 0 {
		return nil, false
	}
	gone := map[int]bool{}
	for _, de := range derrs {
		if !errors.Is(de.Err, datastore.ErrNotFound) {
			return nil, false
		}
		gone[de.Index] = true
	}
	return gone, true
}

// notFound is calicoctl's message for a resource that does not exist,
// with the file and document it came from.
func (d *Document) notFound() string {
	msg := resourceDoesNotExist(v3.KindOf(d.Obj).Kind, d.Obj.GetNamespace(), d.Obj.GetName())
	if d.Source != commandLine {
		msg = fmt.Sprintf("%s document %d: %s", d.Source, d.Index, msg)
	}
	return msg
}

// resourceDoesNotExist is calicoctl's message: "resource does not exist:
// NetworkPolicy(prod/web)".
func resourceDoesNotExist(kind, ns, name string) string {
	return fmt.Sprintf("resource does not exist: %s(%s)", kind, strings.TrimPrefix(ns+"/"+name, "/"))
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
