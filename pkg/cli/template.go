package cli

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"text/template"

	"github.com/tortie/tortie/pkg/client"
)

// templateFuncs are the functions calicoctl gives go-templates: join and
// joinAndTruncate for lists and maps, and config("asnumber"), the cluster's
// AS number. c is nil while a template is only parsed.
func templateFuncs(ctx context.Context, c *client.Client) template.FuncMap {
	asn := ""
	return template.FuncMap{
		"join":            func(items any, sep string) string { return joinAndTruncate(items, sep, 0) },
		"joinAndTruncate": joinAndTruncate,
		"config": func(name string) (string, error) {
			if !strings.EqualFold(name, "asnumber") {
				return "", fmt.Errorf("config %q: only asnumber is known", name)
			}
			if c == nil {
				return "", errors.New("config: no datastore")
			}
			if asn == "" {
				asn = clusterASN(ctx, c)
			}
			return asn, nil
		},
	}
}

// joinAndTruncate joins the elements of a list, or a map's key=value pairs
// in key order, with sep, and cuts the result to maxLen ending "..." when
// maxLen is positive and it is longer. A single value is a list of one.
func joinAndTruncate(items any, sep string, maxLen int) string {
	if items == nil {
		return ""
	}
	var parts []string
	v := reflect.ValueOf(items)
	switch v.Kind() {
	case reflect.Map:
		for _, k := range v.MapKeys() {
			parts = append(parts, fmt.Sprintf("%v=%v", k.Interface(), v.MapIndex(k).Interface()))
		}
		sort.Strings(parts)
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			parts = append(parts, fmt.Sprint(v.Index(i).Interface()))
		}
	default:
		parts = []string{fmt.Sprint(items)}
	}
	s := strings.Join(parts, sep)
	if maxLen > 0 && len(s) > maxLen {
		s = s[:max(maxLen-3, 0)] + "..."
	}
	return s
}
