package images

import (
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"path/filepath"
)

// DefaultTag is the images' tag: the Makefile's IMAGE_TAG, the version
// deploy/tortie.yaml names. Never "latest": with another tag a pod's
// imagePullPolicy IfNotPresent uses the imported image and never pulls.
const DefaultTag = "v0.1.0-dev"

// DefaultRegistry is the registry and namespace of the images' names. The
// images are imported, not pulled; the name only has to be the one the
// manifest's pods ask for (kubelet normalises "tortie/node" to
// "docker.io/tortie/node").
const DefaultRegistry = "docker.io/tortie"

// Ref is an image's full reference.
func Ref(registry, name, tag string) string {
	return registry + "/" + name + ":" + tag
}

// The images' short names.
const (
	NodeName            = "node"
	CNIName             = "cni"
	KubeControllersName = "kube-controllers"
)

// Names are the images, in the order `make images` builds them.
var Names = []string{NodeName, CNIName, KubeControllersName}

// Binaries are the tortie binaries each image holds; they are read from
// one directory (`make images` builds them there with CGO_ENABLED=0).
var Binaries = map[string][]string{
	NodeName:            {"tortie-node", "tortie"},
	CNIName:             {"tortie-install-cni", "tortie-cni"},
	KubeControllersName: {"tortie-kube-controllers"},
}

// NodePrograms are the programs of this machine the node image carries:
// nft, which knftables runs for the agent's full syncs of its table, and
// ip, for looking at the host's routes and links from `kubectl exec`.
var NodePrograms = []string{"nft", "ip"}

// nodeFiles are data files of this machine the node image carries when
// present: the CA bundle (an etcd whose certificate a public CA signed,
// with no ETCD_CA_CERT_FILE), and the protocol and service names nft
// prints and parses.
var nodeFiles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/protocols", "/etc/services"}

const envPath = "PATH=" + SystemPath

// base is what every image has: /tmp, and root and nobody in /etc/passwd
// and /etc/group for the tools that look them up.
func base() []Entry {
	return []Entry{
		{Path: "/etc/passwd", Kind: File, Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")},
		{Path: "/etc/group", Kind: File, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Path: "/tmp", Kind: Dir, Mode: 0o1777},
		{Path: "/root", Kind: Dir, Mode: 0o700},
	}
}

// Specs are the three images, from the static binaries in binDir and, for
// the node image, this machine's nft and ip.
func Specs(binDir string) ([]Spec, error) {
	var specs []Spec
	for _, name := range Names {
		s, err := SpecFor(name, binDir)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// SpecFor is one of the images.
func SpecFor(name, binDir string) (Spec, error) {
	bins, ok := Binaries[name]
	if !ok {
		return Spec{}, fmt.Errorf("no image %q (images: %v)", name, Names)
	}
	var tortie []Entry
	for _, b := range bins {
		src := filepath.Join(binDir, b)
		if err := checkStatic(src); err != nil {
			return Spec{}, err
		}
		tortie = append(tortie, Entry{Path: "/usr/bin/" + b, Kind: File, Exec: true, Source: src})
	}
	s := Spec{Name: name, Entrypoint: []string{"/usr/bin/" + bins[0]}, Env: []string{envPath}}
	switch name {
	case NodeName:
		progs, err := HostPrograms(NodePrograms...)
		if err != nil {
			return Spec{}, err
		}
		files, err := HostFiles(true, nodeFiles...)
		if err != nil {
			return Spec{}, err
		}
		debian := append(append(base(), progs...), files...)
		s.Layers = []Layer{
			{Comment: "this machine's nft and ip, their libraries and loader, CA certificates", Entries: debian},
			{Comment: "tortie-node, tortie", Entries: tortie},
		}
	case CNIName:
		s.Layers = []Layer{{Comment: "tortie-install-cni, tortie-cni", Entries: append(base(), tortie...)}}
	case KubeControllersName:
		s.Layers = []Layer{{Comment: "tortie-kube-controllers", Entries: append(base(), tortie...)}}
		s.User = "65534:65534"
	}
	return s, nil
}

// checkStatic refuses a binary that is not a statically linked Go program:
// the cni and kube-controllers images have no loader and no libc, and the
// node image's tortie binaries must not depend on the build machine's.
func checkStatic(p string) error {
	if _, err := buildinfo.ReadFile(p); err != nil {
		return fmt.Errorf("%s: not a Go binary: %w", p, err)
	}
	f, err := elf.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s: dynamically linked (has an ELF interpreter); build it with CGO_ENABLED=0", p)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("%s: needs shared libraries %v; build it with CGO_ENABLED=0", p, libs)
	}
	return nil
}
