package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the time every file and the image itself carry.
var Epoch = time.Unix(0, 0).UTC()

// Kind is what an Entry is.
type Kind int

// The kinds of entries.
const (
	File Kind = iota
	Dir
	Symlink
)

// Entry is one file of a layer.
type Entry struct {
	// Path is where it is in the image: absolute, cleaned.
	Path string
	Kind Kind
	// Exec makes a File mode 0755 (else 0644). Dir is always 0755 unless
	// Mode says otherwise.
	Exec bool
	// Mode, when non-zero, is the exact permission bits (e.g. 01777 for /tmp).
	Mode int64
	// Source is the file on this machine a File is read from, unless Data
	// is set.
	Source string
	Data   []byte
	// Target is a Symlink's target, as the link holds it.
	Target string
}

// Layer is a set of entries; parent directories are added as needed.
type Layer struct {
	// Comment says what the layer is, in the image's history.
	Comment string
	Entries []Entry
}

func (e Entry) mode() int64 {
	switch {
	case e.Mode != 0:
		return e.Mode
	case e.Kind == Dir, e.Kind == Symlink, e.Exec:
		return 0o755
	}
	return 0o644
}

// tarBytes writes the layer as a tar stream: entries sorted by path, each
// parent directory before its children, all owned by root, all dated Epoch.
func (l Layer) tarBytes() ([]byte, error) {
	byPath := map[string]Entry{}
	for _, e := range l.Entries {
		p := path.Clean("/" + e.Path)
		if p == "/" {
			return nil, fmt.Errorf("entry %q: the root is not an entry", e.Path)
		}
		e.Path = p
		if old, ok := byPath[p]; ok && !sameEntry(old, e) {
			return nil, fmt.Errorf("%s: two different entries", p)
		}
		byPath[p] = e
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if old, ok := byPath[d]; ok {
				if old.Kind != Dir {
					return nil, fmt.Errorf("%s: a parent of %s, but not a directory", d, p)
				}
				continue
			}
			byPath[d] = Entry{Path: d, Kind: Dir}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	// Sorted by path components, so that "usr/bin" sorts before "usr/bin-x"
	// ('/' would sort after '-') and a directory comes before its contents.
	sort.Slice(paths, func(i, j int) bool {
		return lessPath(paths[i], paths[j])
	})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := byPath[p]
		h := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    e.mode(),
			ModTime: Epoch,
			Format:  tar.FormatPAX,
		}
		var data []byte
		switch e.Kind {
		case Dir:
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case Symlink:
			h.Typeflag = tar.TypeSymlink
			h.Linkname = e.Target
		case File:
			h.Typeflag = tar.TypeReg
			data = e.Data
			if data == nil && e.Source != "" {
				b, err := os.ReadFile(e.Source)
				if err != nil {
					return nil, err
				}
				data = b
			}
			h.Size = int64(len(data))
		default:
			return nil, fmt.Errorf("%s: unknown kind %d", p, e.Kind)
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func sameEntry(a, b Entry) bool {
	return a.Kind == b.Kind && a.mode() == b.mode() && a.Source == b.Source &&
		bytes.Equal(a.Data, b.Data) && a.Target == b.Target
}

func lessPath(a, b string) bool {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] != bs[i] {
			return as[i] < bs[i]
		}
	}
	return len(as) < len(bs)
}

// v1Layer is the layer as an OCI layer (gzip, which writes no time).
func (l Layer) v1Layer() (v1.Layer, error) {
	b, err := l.tarBytes()
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// HostFile is an entry for a file of this machine at the same path, with
// its mode's executable bit.
func HostFile(p string) (Entry, error) {
	st, err := os.Stat(p)
	if err != nil {
		return Entry{}, err
	}
	if !st.Mode().IsRegular() {
		return Entry{}, fmt.Errorf("%s: not a regular file", p)
	}
	return Entry{Path: p, Kind: File, Source: p, Exec: st.Mode()&0o111 != 0}, nil
}
