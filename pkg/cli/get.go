package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	goyaml "go.yaml.in/yaml/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
)

func newGetCommand(g *globals) *cobra.Command {
	var (
		mf            manifestFlags
		namespace     string
		allNamespaces bool
		output        string
		selector      string
	)
	cmd := &cobra.Command{
		Use:   "get (KIND [NAME...] | -f FILE|DIR|-)",
		Short: "Show resources",
		Long: `Show resources of one kind, all of them or by name, or those a manifest
names (-f, with -R and --skip-empty as the other -f commands), as calicoctl
does.

KIND is any of calicoctl's names or aliases (ippool, ipp, pool, networkpolicy,
np, gnp, wep, hep, ...). Namespaced kinds read namespace "default" unless -n or
-A is given. Asking for names that do not exist is an error (exit status 1);
listing a kind that has no resources is not. -l (--selector) keeps the
resources whose labels match a Kubernetes label selector
("app=web,tier!=db", "env in (a,b)", "!legacy").

Output (-o):
  ps                      the table (default)
  wide                    the table with more columns
  custom-columns=A,B,...  the table with these columns: any of the kind's
                          ps and wide headings (NAME, CIDR, NAMESPACE, ...),
                          or HEADING:.json.path for any field
                          (NAME:.metadata.name,BLOCK:.spec.blockSize)
  yaml, json              the resources; a listing is one <Kind>List
  go-template=TEMPLATE    a Go template, run as calicoctl runs it: on the
                          list of results (a listing is one <Kind>List whose
                          .Items are the resources), with Go field names
                          ({{range .}}{{range .Items}}{{.Name}} {{end}}{{end}})
                          and the functions join, joinAndTruncate and config
  go-template-file=FILE   the same, the template read from FILE`,
		Example: `  tortie get ippools
  tortie get gnp allow-dns -o yaml
  tortie get wep -A -o wide -l app=web
  tortie get ippools -o custom-columns=NAME,CIDR,BLOCK:.spec.blockSize
  tortie get nodes -o go-template='{{range .}}{{range .Items}}{{.Name}}{{"\n"}}{{end}}{{end}}'
  tortie get -f policy.yaml -o yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := parseOutput(output)
			if err != nil {
				return err
			}
			var sel labels.Selector
			if selector != "" {
				if sel, err = labels.Parse(selector); err != nil {
					return fmt.Errorf("--selector: %w", err)
				}
			}
			if namespace != "" && allNamespaces {
				return errors.New("cannot use both --namespace and --all-namespaces")
			}
			if len(mf.files) > 0 {
				if len(args) > 0 {
					return errors.New("give either -f or KIND [NAME...], not both")
				}
				if sel != nil || allNamespaces {
					return errors.New("-f names its resources: no --selector or --all-namespaces with it")
				}
				return getFromManifests(g, &mf, namespace, out)
			}
			if len(args) == 0 {
				return errors.New("give KIND [NAME...] or -f FILE")
			}
			k, err := v3.LookupKind(args[0])
			if err != nil {
				return err
			}
			names := args[1:]
			if !k.Namespaced && (namespace != "" || allNamespaces) {
				return fmt.Errorf("%s is not namespaced", k.Kind)
			}
			if allNamespaces && len(names) > 0 {
				return errors.New("cannot use --all-namespaces when getting resources by name")
			}
			if sel != nil && len(names) > 0 {
				return errors.New("cannot use --selector when getting resources by name")
			}
			withNamespace := allNamespaces || namespace != ""
			if _, err := out.columns(k, withNamespace); err != nil {
				return err // an unknown custom column, before connecting
			}
			ns := ""
			if k.Namespaced && !allNamespaces {
				ns = namespaceFor(k, namespace)
			}
			c, ctx, done, err := g.session()
			if err != nil {
				return err
			}
			defer done()

			if len(names) == 0 {
				objs, rev, err := c.List(ctx, k, ns)
				if err != nil {
					return err
				}
				if k.Kind == v3.KindTier {
					sortTiers(objs)
				}
				if sel != nil {
					objs = slices.DeleteFunc(objs, func(r v3.Resource) bool { return !sel.Matches(labels.Set(r.GetLabels())) })
				}
				return printResources(ctx, g, c, out, k, objs, rev, withNamespace)
			}
			var objs []v3.Resource
			var missing []string
			for _, n := range names {
				r, err := c.Get(ctx, k, ns, n)
				if errors.Is(err, datastore.ErrNotFound) {
					missing = append(missing, resourceDoesNotExist(k.Kind, ns, n))
					continue
				}
				if err != nil {
					return err
				}
				objs = append(objs, r)
			}
			return errors.Join(printResources(ctx, g, c, out, nil, objs, 0, withNamespace), missingError(missing))
		},
	}
	mf.bind(cmd)
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of a namespaced kind (default \"default\")")
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "every namespace")
	cmd.Flags().StringVarP(&output, "output", "o", "ps", "output format: ps, wide, custom-columns=..., yaml, json, go-template=..., go-template-file=...")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only resources whose labels match this Kubernetes label selector")
	return cmd
}

// getFromManifests shows the resources the manifests name, as they are
// stored.
func getFromManifests(g *globals, mf *manifestFlags, namespace string, out outputFormat) error {
	docs, err := mf.read(g.in)
	if err != nil {
		return err
	}
	if len(docs) == 0 { // --skip-empty
		return nil
	}
	if err := decodeDocuments(docs, decodeOnly); err != nil {
		return err
	}
	for _, d := range docs {
		k := v3.KindOf(d.Obj)
		if namespace != "" && k.Namespaced && d.Obj.GetNamespace() != namespace {
			d.Obj.SetNamespace(namespace)
		}
		if _, err := out.columns(k, false); err != nil {
			return fmt.Errorf("%s: %w", d.Describe(), err)
		}
	}
	c, ctx, done, err := g.session()
	if err != nil {
		return err
	}
	defer done()
	var objs []v3.Resource
	var missing []string
	for _, d := range docs {
		r, err := c.Get(ctx, v3.KindOf(d.Obj), d.Obj.GetNamespace(), d.Obj.GetName())
		if errors.Is(err, datastore.ErrNotFound) {
			missing = append(missing, d.notFound())
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", d.Describe(), err)
		}
		objs = append(objs, r)
	}
	return errors.Join(printResources(ctx, g, c, out, nil, objs, 0, namespace != ""), missingError(missing))
}

func missingError(missing []string) error {
	if len(missing) == 0 {
		return nil
	}
	return errors.New(strings.Join(missing, "\n"))
}

// printResources prints as calicoctl does. listed is the kind of a
// listing, nil when objs were asked for by name: a listing is one
// <Kind>List object in yaml, json and templates, one object asked for is
// itself, several are a sequence; tables are one per listing, else one per
// object.
func printResources(ctx context.Context, g *globals, c *client.Client, out outputFormat, listed *v3.KindInfo, objs []v3.Resource, rev int64, withNamespace bool) error {
	switch out.format {
	case formatTable:
		for _, o := range objs {
			if v3.KindOf(o).Kind == v3.KindNode && out.wide {
				globalASN = clusterASN(ctx, c)
				break
			}
		}
		if listed != nil {
			return printTable(g.out, listed, objs, out, withNamespace)
		}
		for _, o := range objs {
			if err := printTable(g.out, v3.KindOf(o), []v3.Resource{o}, out, withNamespace); err != nil {
				return err
			}
		}
		return nil
	case formatTemplate:
		var data []any
		if listed != nil {
			data = []any{newResourceList(listed, objs, rev)}
		} else {
			for _, o := range objs {
				data = append(data, o)
			}
		}
		return out.template.Funcs(templateFuncs(ctx, c)).Execute(g.out, data)
	}
	var v any
	switch {
	case listed != nil:
		v = newResourceList(listed, objs, rev)
	case len(objs) == 1:
		v = objs[0]
	case len(objs) == 0:
		return nil
	default:
		v = objs
	}
	if out.format == formatJSON {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(g.out, "%s\n", b)
		return err
	}
	b, err := toYAML(v)
	if err != nil {
		return err
	}
	_, err = g.out.Write(b)
	return err
}

func newResourceList(k *v3.KindInfo, objs []v3.Resource, rev int64) *resourceList {
	if objs == nil {
		objs = []v3.Resource{}
	}
	return &resourceList{
		TypeMeta: metav1.TypeMeta{Kind: k.Kind + "List", APIVersion: v3.APIVersion},
		ListMeta: metav1.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)},
		Items:    objs,
	}
}

// resourceList is a listing as calicoctl prints it: Calico's <Kind>List
// types, whose JSON keys come in their field order (kind, apiVersion,
// metadata, items) and whose Go fields a go-template reaches (.Items,
// .ListMeta.ResourceVersion).
type resourceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []v3.Resource `json:"items"`
}

// toYAML prints what sigs.k8s.io/yaml.Marshal prints (keys sorted, numbers
// as written), without its slow step of re-parsing the JSON as YAML: the
// JSON is decoded with encoding/json, numbers kept as json.Number, which the
// YAML encoder prints as numbers.
func toYAML(v any) ([]byte, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, err
	}
	return goyaml.Marshal(generic)
}

// clusterASN is the AS number nodes without their own use: BGPConfiguration
// default's, else Calico's default 64512.
func clusterASN(ctx context.Context, c *client.Client) string {
	k, _ := v3.KindByKind(v3.KindBGPConfiguration)
	r, err := c.Get(ctx, k, "", "default")
	if errors.Is(err, datastore.ErrNotFound) {
		return "64512"
	}
	if err != nil {
		return "unknown"
	}
	b, _ := json.Marshal(r)
	var o map[string]any
	_ = json.Unmarshal(b, &o)
	return fieldOr("spec.asNumber", "64512")(o)
}

// sortTiers orders tiers by their order, unset last, as calicoctl lists them.
func sortTiers(objs []v3.Resource) {
	order := func(r v3.Resource) (float64, bool) {
		t := r.(*v3.Tier)
		if t.Spec.Order == nil {
			return 0, false
		}
		return *t.Spec.Order, true
	}
	sort.SliceStable(objs, func(i, j int) bool {
		oi, si := order(objs[i])
		oj, sj := order(objs[j])
		if si != sj {
			return si
		}
		return si && oi < oj
	})
}
