package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec is one image.
type Spec struct {
	// Name is the short name: node, cni, kube-controllers; the archive is
	// <Name>.tar and the repository <registry>/tortie/<Name>.
	Name       string
	Layers     []Layer
	Entrypoint []string
	Env        []string
	// User, if set, is the user the image runs as ("65534:65534").
	User string
}

// Annotations containerd and the OCI image layout read from index.json.
const (
	// AnnotationContainerdName is the full reference containerd's importer
	// (ctr images import) names the image by.
	AnnotationContainerdName = "io.containerd.image.name"
	// AnnotationRefName is the OCI layout's name of the manifest: the tag,
	// as skopeo's oci-archive:FILE:TAG and crane expect.
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

// Image builds the image: its layers in order, the configuration (this
// machine's architecture, linux), OCI media types, dated Epoch.
func (s Spec) Image(tag string) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, l := range s.Layers {
		layer, err := l.v1Layer()
		if err != nil {
			return nil, fmt.Errorf("image %s, layer %q: %w", s.Name, l.Comment, err)
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: "tortie-images", Comment: l.Comment},
		})
		if err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Created = v1.Time{Time: Epoch}
	cf.Config = v1.Config{
		Entrypoint: s.Entrypoint,
		Env:        s.Env,
		User:       s.User,
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":   "tortie/" + s.Name,
			"org.opencontainers.image.version": tag,
			"org.opencontainers.image.source":  "https://github.com/tortie/tortie",
		},
	}
	return mutate.ConfigFile(img, cf)
}

// Built is an image written to an archive.
type Built struct {
	Ref    string  // docker.io/tortie/node:v0.1.0-dev
	Digest v1.Hash // the manifest's digest
	// Size is the archive's size in bytes (the compressed layers, the
	// configuration and the manifest, and the tar's own overhead).
	Size int64
	Path string
}

// Write builds the image and writes it to <dir>/<Name>.tar, an OCI image
// layout in a tar (oci-layout, index.json, blobs/sha256/...): entries
// sorted, dated Epoch, so that the same image gives the same bytes. The
// index names the manifest both ways importers look: containerd's full
// reference annotation and the OCI ref name (the tag).
func (s Spec) Write(dir, registry, tag string) (Built, error) {
	ref := Ref(registry, s.Name, tag)
	img, err := s.Image(tag)
	if err != nil {
		return Built{}, err
	}
	blobs := map[string][]byte{}
	add := func(b []byte) v1.Hash {
		h, _, _ := v1.SHA256(bytes.NewReader(b))
		blobs[h.Hex] = b
		return h
	}
	layers, err := img.Layers()
	if err != nil {
		return Built{}, err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return Built{}, err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return Built{}, err
		}
		add(b)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return Built{}, err
	}
	add(cfg)
	man, err := img.RawManifest()
	if err != nil {
		return Built{}, err
	}
	digest := add(man)
	cf, err := img.ConfigFile()
	if err != nil {
		return Built{}, err
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIManifestSchema1,
			Size:      int64(len(man)),
			Digest:    digest,
			Annotations: map[string]string{
				AnnotationContainerdName: ref,
				AnnotationRefName:        tag,
			},
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return Built{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Built{}, err
	}
	out := filepath.Join(dir, s.Name+".tar")
	tmp, err := os.CreateTemp(dir, "."+s.Name+".tar.*")
	if err != nil {
		return Built{}, err
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	writeEntry := func(name string, data []byte, dir bool) error {
		h := &tar.Header{Name: name, Mode: 0o644, ModTime: Epoch, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if dir {
			h.Mode, h.Size, h.Typeflag = 0o755, 0, tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	hexes := make([]string, 0, len(blobs))
	for h := range blobs {
		hexes = append(hexes, h)
	}
	sort.Strings(hexes)
	if err := writeEntry("blobs/", nil, true); err != nil {
		return Built{}, err
	}
	if err := writeEntry("blobs/sha256/", nil, true); err != nil {
		return Built{}, err
	}
	for _, h := range hexes {
		if err := writeEntry("blobs/sha256/"+h, blobs[h], false); err != nil {
			return Built{}, err
		}
	}
	if err := writeEntry("index.json", indexJSON, false); err != nil {
		return Built{}, err
	}
	if err := writeEntry("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`), false); err != nil {
		return Built{}, err
	}
	if err := tw.Close(); err != nil {
		return Built{}, err
	}
	st, err := tmp.Stat()
	if err != nil {
		return Built{}, err
	}
	if err := tmp.Close(); err != nil {
		return Built{}, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return Built{}, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return Built{}, err
	}
	return Built{Ref: ref, Digest: digest, Size: st.Size(), Path: out}, nil
}
