package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// A column of `tortie get` tables. Values are read from the object's JSON
// form, so the printers follow the wire format calicoctl's templates print.
type column struct {
	heading string
	value   func(obj map[string]any) string
}

// tableSpec is a kind's ps and wide columns, as calicoctl prints them.
type tableSpec struct {
	ps, wide []column
}

func field(path string) func(map[string]any) string {
	return func(o map[string]any) string { return formatValue(lookup(o, path), "") }
}

// fieldOr prints def when the field is unset (calicoctl's "Never", "-").
func fieldOr(path, def string) func(map[string]any) string {
	return func(o map[string]any) string { return formatValue(lookup(o, path), def) }
}

// ptrField prints a pointer-typed field as a Go template does: <nil> when unset.
func ptrField(path string) func(map[string]any) string { return fieldOr(path, "<nil>") }

func joined(path string, truncate int) func(map[string]any) string {
	return func(o map[string]any) string {
		var parts []string
		switch v := lookup(o, path).(type) {
		case []any:
			for _, e := range v {
				parts = append(parts, formatValue(e, ""))
			}
		case map[string]any:
			for k, e := range v {
				parts = append(parts, k+"="+formatValue(e, ""))
			}
			sort.Strings(parts)
		}
		s := strings.Join(parts, ",")
		if truncate > 0 && len(s) > truncate {
			s = s[:truncate-3] + "..."
		}
		return s
	}
}

func col(h string, v func(map[string]any) string) column { return column{h, v} }

var (
	nameCol      = col("NAME", field("metadata.name"))
	namespaceCol = col("NAMESPACE", field("metadata.namespace"))
)

// tables follows calicoctl's resource manager, with one deliberate addition
// from tortie's reference: policies show their TIER (calicoctl shows it for
// staged policies only), and IPPool wide shows ASSIGNMENTMODE.
var tables = map[string]tableSpec{
	v3.KindIPPool: {
		ps: []column{nameCol, col("CIDR", field("spec.cidr")), col("SELECTOR", field("spec.nodeSelector"))},
		wide: []column{nameCol, col("CIDR", field("spec.cidr")), col("NAT", fieldOr("spec.natOutgoing", "false")),
			col("IPIPMODE", fieldOr("spec.ipipMode", "Never")), col("VXLANMODE", fieldOr("spec.vxlanMode", "Never")),
			col("DISABLED", fieldOr("spec.disabled", "false")), col("DISABLEBGPEXPORT", fieldOr("spec.disableBGPExport", "false")),
			col("SELECTOR", field("spec.nodeSelector")), col("ASSIGNMENTMODE", field("spec.assignmentMode"))},
	},
	v3.KindIPReservation: {
		ps:   []column{nameCol},
		wide: []column{nameCol, col("CIDRS", joined("spec.reservedCIDRs", 80))},
	},
	v3.KindBGPConfiguration: {
		ps: []column{nameCol, col("LOGSEVERITY", field("spec.logSeverityScreen")),
			col("MESHENABLED", fieldOr("spec.nodeToNodeMeshEnabled", "-")), col("ASNUMBER", fieldOr("spec.asNumber", "-"))},
	},
	v3.KindBGPPeer: {
		ps: []column{nameCol, col("PEERIP", field("spec.peerIP")), col("NODE", bgpPeerNode), col("ASN", fieldOr("spec.asNumber", "0"))},
	},
	v3.KindBGPFilter: {
		ps: []column{nameCol, col("NUMEXPORT", countRules("exportV4", "exportV6")), col("NUMIMPORT", countRules("importV4", "importV6"))},
	},
	v3.KindNode: {
		ps:   []column{nameCol},
		wide: []column{nameCol, col("ASN", nodeASN), col("IPV4", field("spec.bgp.ipv4Address")), col("IPV6", field("spec.bgp.ipv6Address"))},
	},
	v3.KindWorkloadEndpoint: {
		ps: []column{col("WORKLOAD", wepWorkload), col("NODE", field("spec.node")), col("NETWORKS", joined("spec.ipNetworks", 0)),
			col("INTERFACE", field("spec.interfaceName"))},
		wide: []column{nameCol, col("WORKLOAD", wepWorkload), col("NODE", field("spec.node")), col("NETWORKS", joined("spec.ipNetworks", 0)),
			col("INTERFACE", field("spec.interfaceName")), col("PROFILES", joined("spec.profiles", 0)), col("NATS", wepNATs)},
	},
	v3.KindHostEndpoint: {
		ps: []column{nameCol, col("NODE", field("spec.node"))},
		wide: []column{nameCol, col("NODE", field("spec.node")), col("INTERFACE", field("spec.interfaceName")),
			col("IPS", joined("spec.expectedIPs", 0)), col("PROFILES", joined("spec.profiles", 0))},
	},
	v3.KindTier: {
		ps: []column{nameCol, col("ORDER", ptrField("spec.order"))},
	},
	v3.KindNetworkPolicy:             policyTable,
	v3.KindGlobalNetworkPolicy:       policyTable,
	v3.KindStagedNetworkPolicy:       policyTable,
	v3.KindStagedGlobalNetworkPolicy: policyTable,
	v3.KindStagedKubernetesNetworkPolicy: {
		ps: []column{nameCol, col("ACTION", field("spec.stagedAction"))},
	},
	v3.KindNetworkSet: {
		ps:   []column{nameCol},
		wide: []column{nameCol, col("NETS", joined("spec.nets", 80))},
	},
	v3.KindGlobalNetworkSet: {
		ps:   []column{nameCol},
		wide: []column{nameCol, col("NETS", joined("spec.nets", 80))},
	},
	v3.KindProfile: {
		ps:   []column{nameCol},
		wide: []column{nameCol, col("LABELS", joined("spec.labelsToApply", 0))},
	},
	v3.KindClusterInformation: {
		ps: []column{nameCol, col("CLUSTERGUID", field("spec.clusterGUID")), col("CLUSTERTYPE", field("spec.clusterType")),
			col("CALICOVERSION", field("spec.calicoVersion")), col("DATASTOREREADY", ptrField("spec.datastoreReady"))},
	},
	v3.KindIPAMConfiguration: {
		ps: []column{nameCol, col("STRICTAFFINITY", fieldOr("spec.strictAffinity", "false")), col("AUTOALLOCATEBLOCKS", fieldOr("spec.autoAllocateBlocks", "false"))},
		wide: []column{nameCol, col("STRICTAFFINITY", fieldOr("spec.strictAffinity", "false")), col("AUTOALLOCATEBLOCKS", fieldOr("spec.autoAllocateBlocks", "false")),
			col("MAXBLOCKSPERHOST", fieldOr("spec.maxBlocksPerHost", "0"))},
	},
	v3.KindFelixConfiguration:           {ps: []column{nameCol}},
	v3.KindKubeControllersConfiguration: {ps: []column{nameCol}},
}

var policyTable = tableSpec{
	ps: []column{nameCol, col("TIER", field("spec.tier"))},
	wide: []column{nameCol, col("TIER", field("spec.tier")), col("ORDER", ptrField("spec.order")),
		col("SELECTOR", field("spec.selector"))},
}

func bgpPeerNode(o map[string]any) string {
	if n := field("spec.node")(o); n != "" {
		return n
	}
	if s := field("spec.nodeSelector")(o); s != "" {
		return s
	}
	return "(global)"
}

func wepWorkload(o map[string]any) string {
	if w := field("spec.workload")(o); w != "" {
		return w
	}
	return field("spec.pod")(o)
}

func wepNATs(o map[string]any) string {
	nats, _ := lookup(o, "spec.ipNATs").([]any)
	parts := make([]string, len(nats))
	for i, n := range nats {
		m, _ := n.(map[string]any)
		parts[i] = fmt.Sprintf("{%s %s}", formatValue(m["internalIP"], ""), formatValue(m["externalIP"], ""))
	}
	return strings.Join(parts, ",")
}

func countRules(v4, v6 string) func(map[string]any) string {
	return func(o map[string]any) string {
		a, _ := lookup(o, "spec."+v4).([]any)
		b, _ := lookup(o, "spec."+v6).([]any)
		return fmt.Sprint(len(a) + len(b))
	}
}

// nodeASN shows the node's own AS number, or the cluster's in parentheses,
// as calicoctl does. globalASN is filled in by the get command.
var globalASN = "64512"

func nodeASN(o map[string]any) string {
	if lookup(o, "spec.bgp") == nil {
		return ""
	}
	if asn := field("spec.bgp.asNumber")(o); asn != "" {
		return asn
	}
	return "(" + globalASN + ")"
}

func lookup(o map[string]any, path string) any {
	var cur any = o
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func formatValue(v any, def string) string {
	switch x := v.(type) {
	case nil:
		return def
	case string:
		return x
	case float64, bool:
		return fmt.Sprint(x)
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// printTable writes one calicoctl-style table: every cell ends with a tab,
// tabwriter(min 5, pad 3), then a blank line.
func printTable(w io.Writer, k *v3.KindInfo, objs []v3.Resource, out outputFormat, withNamespace bool) error {
	cols, err := out.columns(k, withNamespace)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 5, 1, 3, ' ', 0)
	for _, c := range cols {
		fmt.Fprint(tw, c.heading, "\t")
	}
	fmt.Fprintln(tw)
	for _, r := range objs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		var o map[string]any
		if err := json.Unmarshal(b, &o); err != nil {
			return err
		}
		for _, c := range cols {
			fmt.Fprint(tw, c.value(o), "\t")
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintln(w)
	return err
}

// outputKind is what -o asks for.
type outputKind int

const (
	formatTable outputKind = iota // ps, wide, custom-columns
	formatYAML
	formatJSON
	formatTemplate // go-template, go-template-file
)

// outputFormat is a parsed -o.
type outputFormat struct {
	format outputKind
	wide   bool
	// custom are custom-columns' columns: a heading of the kind's table,
	// or HEADING:.json.path.
	custom   []string
	template *template.Template
}

const outputFormats = "ps, wide, custom-columns=..., yaml, json, go-template=... or go-template-file=..."

// parseOutput parses -o as calicoctl does, with its messages.
func parseOutput(s string) (outputFormat, error) {
	switch s {
	case "ps":
		return outputFormat{format: formatTable}, nil
	case "wide":
		return outputFormat{format: formatTable, wide: true}, nil
	case "yaml", "yml":
		return outputFormat{format: formatYAML}, nil
	case "json":
		return outputFormat{format: formatJSON}, nil
	}
	key, val, _ := strings.Cut(s, "=")
	switch key {
	case "custom-columns":
		if val == "" {
			return outputFormat{}, errors.New("need to specify at least one column")
		}
		return outputFormat{format: formatTable, custom: strings.Split(val, ",")}, nil
	case "go-template-file":
		if val == "" {
			return outputFormat{}, errors.New("need to specify a template file")
		}
		b, err := os.ReadFile(val)
		if err != nil {
			return outputFormat{}, err
		}
		val = string(b)
		fallthrough
	case "go-template":
		if val == "" {
			return outputFormat{}, errors.New("need to specify a template")
		}
		t, err := template.New("get").Funcs(templateFuncs(context.Background(), nil)).Parse(val)
		if err != nil {
			return outputFormat{}, fmt.Errorf("%s: %w", key, err)
		}
		return outputFormat{format: formatTemplate, template: t}, nil
	}
	return outputFormat{}, fmt.Errorf("unrecognized output format %q (use %s)", s, outputFormats)
}

// columns are the table columns for kind k: its ps or wide ones, with the
// namespace first when asked for, or the custom ones. Nil for formats
// that are not tables.
func (o outputFormat) columns(k *v3.KindInfo, withNamespace bool) ([]column, error) {
	if o.format != formatTable {
		return nil, nil
	}
	spec := tables[k.Kind]
	if o.custom == nil {
		cols := spec.ps
		if o.wide && spec.wide != nil {
			cols = spec.wide
		}
		if withNamespace && k.Namespaced {
			cols = append([]column{namespaceCol}, cols...)
		}
		return cols, nil
	}
	known := map[string]column{}
	for _, c := range slices.Concat(spec.ps, spec.wide) {
		known[c.heading] = c
	}
	if k.Namespaced {
		known[namespaceCol.heading] = namespaceCol
	}
	var cols []column
	for _, h := range o.custom {
		if heading, path, ok := strings.Cut(h, ":"); ok {
			if !strings.HasPrefix(path, ".") || heading == "" {
				return nil, fmt.Errorf("custom column %q: want HEADING:.json.path", h)
			}
			cols = append(cols, col(heading, pathValue(path)))
			continue
		}
		c, ok := known[h]
		if !ok {
			return nil, fmt.Errorf("Unknown heading %s, valid values are: %s", h, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
		}
		cols = append(cols, c)
	}
	return cols, nil
}

// pathValue reads a kubectl-style custom column's .a.b[0].c path from the
// object's JSON form: a list of plain values prints joined by commas, an
// object as JSON, and a field that is not there as <none>, as kubectl
// prints them.
func pathValue(path string) func(map[string]any) string {
	return func(o map[string]any) string {
		var cur any = o
		for _, seg := range strings.Split(strings.TrimPrefix(path, "."), ".") {
			name, rest, _ := strings.Cut(seg, "[")
			if name != "" {
				m, ok := cur.(map[string]any)
				if !ok {
					return "<none>"
				}
				cur = m[name]
			}
			for rest != "" {
				idx, after, ok := strings.Cut(rest, "]")
				n, err := strconv.Atoi(idx)
				l, isList := cur.([]any)
				if !ok || err != nil || !isList || n < 0 || n >= len(l) {
					return "<none>"
				}
				cur = l[n]
				rest = strings.TrimPrefix(after, "[")
			}
		}
		if l, ok := cur.([]any); ok {
			parts := make([]string, len(l))
			for i, e := range l {
				parts[i] = formatValue(e, "")
			}
			return strings.Join(parts, ",")
		}
		return formatValue(cur, "<none>")
	}
}
