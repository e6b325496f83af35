package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	goyaml "go.yaml.in/yaml/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
)

func newGetCommand(g *globals) *cobra.Command {
	var (
		namespace     string
		allNamespaces bool
		output        string
	)
	cmd := &cobra.Command{
		Use:   "get KIND [NAME...]",
		Short: "Show resources",
		Long: `Show resources of one kind, all of them or by name, as calicoctl does.

KIND is any of calicoctl's names or aliases (ippool, ipp, pool, networkpolicy,
np, gnp, wep, hep, ...). Namespaced kinds read namespace "default" unless -n or
-A is given. Output: ps (default table), wide (more columns), yaml, json. Asking
for names that do not exist is an error (exit status 1); listing a kind that has
no resources is not.`,
		Example: "  tortie get ippools\n  tortie get gnp allow-dns -o yaml\n  tortie get wep -A -o wide",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := v3.LookupKind(args[0])
			if err != nil {
				return err
			}
			names := args[1:]
			switch output {
			case "ps", "wide", "yaml", "yml", "json":
			default:
				return fmt.Errorf("unrecognized output format %q (use ps, wide, yaml or json)", output)
			}
			if namespace != "" && allNamespaces {
				return errors.New("cannot use both --namespace and --all-namespaces")
			}
			if !k.Namespaced && (namespace != "" || allNamespaces) {
				return fmt.Errorf("%s is not namespaced", k.Kind)
			}
			if allNamespaces && len(names) > 0 {
				return errors.New("cannot use --all-namespaces when getting resources by name")
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

			var objs []v3.Resource
			var rev int64
			var missing []string
			if len(names) == 0 {
				if objs, rev, err = c.List(ctx, k, ns); err != nil {
					return err
				}
				if k.Kind == v3.KindTier {
					sortTiers(objs)
				}
			}
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
			if err := printResources(ctx, g, c, k, objs, rev, len(names) == 0, output, allNamespaces || namespace != ""); err != nil {
				return err
			}
			if len(missing) > 0 {
				return errors.New(strings.Join(missing, "\n"))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of a namespaced kind (default \"default\")")
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "every namespace")
	cmd.Flags().StringVarP(&output, "output", "o", "ps", "output format: ps, wide, yaml or json")
	return cmd
}

// printResources prints as calicoctl does: a listing is one <Kind>List
// object in yaml/json, one object alone is itself, several named objects are
// a sequence.
func printResources(ctx context.Context, g *globals, c *client.Client, k *v3.KindInfo, objs []v3.Resource, rev int64, isList bool, output string, withNamespace bool) error {
	switch output {
	case "ps", "wide":
		if k.Kind == v3.KindNode && output == "wide" {
			globalASN = clusterASN(ctx, c)
		}
		if isList {
			return printTable(g.out, k, objs, output == "wide", withNamespace)
		}
		for _, o := range objs {
			if err := printTable(g.out, k, []v3.Resource{o}, output == "wide", withNamespace); err != nil {
				return err
			}
		}
		return nil
	}
	var v any
	switch {
	case isList:
		items := objs
		if items == nil {
			items = []v3.Resource{}
		}
		v = &resourceList{
			TypeMeta: metav1.TypeMeta{Kind: k.Kind + "List", APIVersion: v3.APIVersion},
			ListMeta: metav1.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)},
			Items:    items,
		}
	case len(objs) == 1:
		v = objs[0]
	case len(objs) == 0:
		return nil
	default:
		v = objs
	}
	if output == "json" {
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
