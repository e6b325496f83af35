package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/tortie/tortie/internal/parallel"
	"github.com/tortie/tortie/internal/yamljson"
	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
)

// Document is one resource of a manifest, with where it came from so every
// error can name the file and the document.
type Document struct {
	Source string // file path, or "<stdin>"
	Index  int    // 1-based position among the source's non-empty documents
	Raw    []byte
	Obj    v3.Resource
	// json is Raw as yaml.YAMLToJSONStrict converts it, when reading the
	// manifest did (nil otherwise: not valid YAML, a duplicated key, an item
	// of a List), so that decoding does not parse the YAML again.
	json []byte
}

// Describe names the document for messages: `p.yaml document 2 (IPPool "x")`.
func (d *Document) Describe() string {
	s := fmt.Sprintf("%s document %d", d.Source, d.Index)
	var id struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if d.Obj == nil {
		_ = yaml.Unmarshal(d.Raw, &id)
	} else {
		id.Kind = d.Obj.GetObjectKind().GroupVersionKind().Kind
		id.Metadata.Name, id.Metadata.Namespace = d.Obj.GetName(), d.Obj.GetNamespace()
	}
	switch {
	case id.Kind != "" && id.Metadata.Namespace != "":
		s += fmt.Sprintf(" (%s %q in namespace %q)", id.Kind, id.Metadata.Name, id.Metadata.Namespace)
	case id.Kind != "":
		s += fmt.Sprintf(" (%s %q)", id.Kind, id.Metadata.Name)
	}
	return s
}

// DocumentErrors is every bad document of a manifest; nothing is written
// while there is one.
type DocumentErrors struct {
	Errs  []string
	Total int
}

func (e *DocumentErrors) Error() string {
	return fmt.Sprintf("%s\n%d of %d document(s) invalid: nothing was written", strings.Join(e.Errs, "\n"), len(e.Errs), e.Total)
}

// manifestFlags are the flags of every command that reads manifests: -f
// (repeatable), -R and --skip-empty, as calicoctl has them.
type manifestFlags struct {
	files []string
	// recursive reads a directory's subdirectories too (-R).
	recursive bool
	// skipEmpty lets a file, directory or standard input hold no resources
	// (--skip-empty); otherwise that is an error naming it.
	skipEmpty bool
}

func (m *manifestFlags) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVarP(&m.files, "filename", "f", nil, "manifest file, directory, or - for standard input (repeatable)")
	f.BoolVarP(&m.recursive, "recursive", "R", false, "read the subdirectories of -f directories too")
	f.BoolVar(&m.skipEmpty, "skip-empty", false, "do not fail on a file, directory or standard input with no resources")
}

// read reads every document the flags name.
func (m *manifestFlags) read(stdin io.Reader) ([]*Document, error) {
	return readManifestsWith(m.files, stdin, *m)
}

// readManifests reads every document of every source: a file, a directory
// (its *.yaml, *.yml and *.json files, sorted) or "-" for standard input.
// A list (kind List or <Kind>List with items) counts as its items. A
// source with no resources is an error.
func readManifests(sources []string, stdin io.Reader) ([]*Document, error) {
	return readManifestsWith(sources, stdin, manifestFlags{})
}

// readManifestsWith is readManifests with -R and --skip-empty: a
// directory is walked in lexical order, into its subdirectories only with
// recursive, as calicoctl walks it.
func readManifestsWith(sources []string, stdin io.Reader, opt manifestFlags) ([]*Document, error) {
	if len(sources) == 0 {
		return nil, errors.New("no manifest given: use -f FILE, -f DIR or -f -")
	}
	empty := func(what string) error {
		if opt.skipEmpty {
			return nil
		}
		return fmt.Errorf("no resources in %s (--skip-empty allows that)", what)
	}
	var docs []*Document
	for _, src := range sources {
		if src == "-" {
			ds, err := splitDocuments("<stdin>", stdin)
			if err != nil {
				return nil, err
			}
			if len(ds) == 0 {
				if err := empty("standard input"); err != nil {
					return nil, err
				}
			}
			docs = append(docs, ds...)
			continue
		}
		fi, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		files := []string{src}
		if fi.IsDir() {
			if files, err = manifestFiles(src, opt.recursive); err != nil {
				return nil, err
			}
		}
		before := len(docs)
		for _, f := range files {
			ds, err := readManifestFile(f)
			if err != nil {
				return nil, err
			}
			if len(ds) == 0 {
				if err := empty("file " + f); err != nil {
					return nil, err
				}
			}
			docs = append(docs, ds...)
		}
		if fi.IsDir() && len(docs) == before {
			what := "directory " + src + " (no *.yaml, *.yml or *.json files"
			if !opt.recursive {
				what += "; -R reads subdirectories"
			}
			if err := empty(what + ")"); err != nil {
				return nil, err
			}
		}
	}
	return docs, nil
}

// manifestFiles lists a directory's *.yaml, *.yml and *.json files in
// lexical order, with its subdirectories' when recursive.
func manifestFiles(dir string, recursive bool) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != dir && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
			files = append(files, path)
		}
		return nil
	})
	return files, err
}

func readManifestFile(path string) ([]*Document, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return splitDocuments(path, fh)
}

// readBufferSize is the read buffer of a manifest: lines longer than it are
// read in pieces, so it bounds nothing but the size of one read.
const readBufferSize = 64 << 10

func splitDocuments(source string, r io.Reader) ([]*Document, error) {
	rd := utilyaml.NewYAMLReader(bufio.NewReaderSize(r, readBufferSize))
	var raws [][]byte
	for {
		raw, err := rd.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if !isEmptyDocument(raw) {
			raws = append(raws, raw)
		}
	}
	// Parsing the YAML is most of the work of reading a manifest: each
	// document is parsed once, here, on every CPU, and decoded from the JSON.
	// Plain YAML takes yamljson's direct path (the same JSON, a fraction of
	// the time and of the memory); the rest the general one.
	jsons := make([][]byte, len(raws))
	parallel.ForEach(len(raws), func(i int) {
		if js, ok := yamljson.Convert(raws[i]); ok {
			jsons[i] = js
		} else if js, err := yaml.YAMLToJSONStrict(raws[i]); err == nil {
			jsons[i] = js
		}
	})
	var docs []*Document
	for i, raw := range raws {
		items := listItems(raw, jsons[i])
		if items == nil {
			docs = append(docs, &Document{Source: source, Index: len(docs) + 1, Raw: raw, json: jsons[i]})
			continue
		}
		for _, it := range items {
			docs = append(docs, &Document{Source: source, Index: len(docs) + 1, Raw: it})
		}
	}
	return docs, nil
}

// isEmptyDocument reports a document of only comments and blank lines.
func isEmptyDocument(raw []byte) bool {
	for _, line := range bytes.Split(raw, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) > 0 && t[0] != '#' {
			return false
		}
	}
	return true
}

// listItems returns the items of a List document (kind List or <Kind>List
// with items), or nil for any other document. js is raw's strict JSON form,
// or nil if there is none.
func listItems(raw, js []byte) [][]byte {
	var l struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	var err error
	if js == nil {
		err = yaml.Unmarshal(raw, &l)
	} else if !bytes.Contains(js, []byte(`List"`)) {
		// The JSON of a kind ending with "List" has this in it (JSON
		// escapes neither letters nor the closing quote); without it, this
		// is no list.
		return nil
	} else {
		// The same as yaml.Unmarshal(raw, &l): the JSON differs from the
		// one that converts YAML to JSON for this struct only in a kind
		// that is not a string (a number, a boolean), which is no list
		// either way.
		err = json.Unmarshal(js, &l)
	}
	if err != nil || !strings.HasSuffix(l.Kind, "List") || l.Items == nil {
		return nil
	}
	out := make([][]byte, len(l.Items))
	for i, it := range l.Items {
		out[i] = it
	}
	return out
}

// decodeResource decodes a projectcalico.org/v3 document, or a Kubernetes
// NetworkPolicy or Namespace, converted as Calico converts them. js is raw's
// strict JSON form (yaml.YAMLToJSONStrict), or nil.
func decodeResource(raw, js []byte) (v3.Resource, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if js == nil {
		if yaml.Unmarshal(raw, &tm) == nil && k8s.IsKubernetesKind(tm.APIVersion, tm.Kind) {
			return k8s.Decode(raw)
		}
		return v3.Decode(raw)
	}
	// json.Unmarshal of js decides as yaml.Unmarshal of raw would: they
	// differ only for an apiVersion or kind that is not a string, which is
	// no Kubernetes kind either way.
	if err := json.Unmarshal(js, &tm); err == nil {
		if k8s.IsKubernetesKind(tm.APIVersion, tm.Kind) {
			return k8s.Decode(raw)
		}
		if r, ok := decodeV3JSON(js, tm.APIVersion, tm.Kind); ok {
			return r, nil
		}
	}
	return v3.Decode(raw)
}

// decodeV3JSON is v3.Decode of a document whose strict JSON form is js and
// whose apiVersion and kind (json.Unmarshal'd from js) are given, when
// v3.Decode would succeed at once; ok false when v3.Decode would find any
// fault, which is then left to it, so that its errors (and its lenient
// second attempt) stay its own. It spares parsing the YAML again.
func decodeV3JSON(js []byte, apiVersion, kind string) (v3.Resource, bool) {
	k, ok := v3.KindByKind(kind)
	if !ok || apiVersion != v3.APIVersion {
		return nil, false
	}
	r := k.New()
	v3.PresizeRules(r, js)
	strictErrs, err := kjson.UnmarshalStrict(js, r, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if len(strictErrs) > 0 || err != nil {
		return nil, false
	}
	return r, true
}

// decodeMode says how far decodeDocuments goes.
type decodeMode int

const (
	// decodeOnly decodes strictly and fills in the default namespace:
	// enough for a delete, which needs only names.
	decodeOnly decodeMode = iota
	// decodeAndValidate also defaults and validates: for writes.
	decodeAndValidate
)

// decodeDocuments decodes every document (and, by mode, defaults and
// validates it) and reports all bad ones at once, in document order.
func decodeDocuments(docs []*Document, mode decodeMode) error {
	msgs := make([]string, len(docs))
	parallel.ForEach(len(docs), func(i int) {
		d := docs[i]
		obj, err := decodeResource(d.Raw, d.json)
		if err != nil {
			msgs[i] = fmt.Sprintf("%s: %v", d.Describe(), err)
			return
		}
		d.Obj = obj
		// As calicoctl: a namespaced resource without a namespace is in "default".
		if v3.KindOf(obj).Namespaced && obj.GetNamespace() == "" {
			obj.SetNamespace("default")
		}
		if mode != decodeAndValidate {
			return
		}
		v3.SetDefaults(obj)
		if err := client.Validate(obj); err != nil {
			msgs[i] = fmt.Sprintf("%s: %v", d.Describe(), err)
		}
	})
	var errs []string
	for _, m := range msgs {
		if m != "" {
			errs = append(errs, m)
		}
	}
	if len(errs) > 0 {
		return &DocumentErrors{Errs: errs, Total: len(docs)}
	}
	return nil
}
