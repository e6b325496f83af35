package images

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The images Kubernetes' network policy e2e tests
// (k8s.io/kubernetes/test/e2e/network/netpol) pull, built from source and
// imported under the names the e2e framework of KubernetesVersion asks for
// (test/utils/image/manifest.go): only agnhost. Every netpol pod runs
// `/agnhost porter` (a TCP, UDP or SCTP echo server on the ports its
// SERVE_<PROTO>_PORT_<n> variables name) and every probe is
// `/agnhost connect HOST:PORT --timeout=... --protocol=...`, exec'd in the
// client pod without a shell, so the image needs no shell or other program.
//
// The sandbox (pause) image is the container runtime's, not the tests'.
const (
	// KubernetesVersion is the release whose e2e suite the names are for
	// (scripts/build-kubernetes.sh's default).
	KubernetesVersion = "v1.37.2"
	// E2ERegistry is the framework's PromoterE2eRegistry.
	E2ERegistry = "registry.k8s.io/e2e-test-images"
	// AgnhostName is the image's short name and archive name (agnhost.tar).
	AgnhostName = "agnhost"
	// AgnhostTag is configs[Agnhost]'s tag for KubernetesVersion, the
	// version in test/images/agnhost/VERSION that the binary reports.
	AgnhostTag = "2.66.1"
)

// AgnhostRef is the agnhost image's full reference:
// registry.k8s.io/e2e-test-images/agnhost:2.66.1.
var AgnhostRef = Ref(E2ERegistry, AgnhostName, AgnhostTag)

// AgnhostFiles are the files of test/images/agnhost the upstream image adds
// besides the binary, at the image's root: porter's TLS certificate and
// key, which porter reads from its working directory (/) when a
// SERVE_TLS_PORT_<n> variable is set.
var AgnhostFiles = []string{"localhost.crt", "localhost.key"}

// AgnhostSpec is the agnhost image as test/images/agnhost/Dockerfile lays
// it out, less Alpine's programs: /agnhost (the entrypoint; a static
// binary built from k8s.io/kubernetes/test/images/agnhost), /agnhost-2 (a
// link, for the entrypoint tests), porter's localhost.crt and localhost.key
// from filesDir, /uploads (netexec's), /tmp, and /etc/passwd and /etc/group
// with root, nobody and the image's user-defined-in-image (uid 1000) in
// group-defined-in-image (gid 50000). It runs as root, like upstream's.
//
// Upstream's image also sets CMD ["pause"]; Spec has no command, so a pod
// that gives neither command nor args gets agnhost's help, not pause.
// The netpol tests always give the command.
func AgnhostSpec(binary, filesDir string) (Spec, error) {
	if err := checkStatic(binary); err != nil {
		return Spec{}, err
	}
	entries := []Entry{
		{Path: "/agnhost", Kind: File, Exec: true, Source: binary},
		{Path: "/agnhost-2", Kind: Symlink, Target: "agnhost"},
		{Path: "/uploads", Kind: Dir},
		{Path: "/tmp", Kind: Dir, Mode: 0o1777},
		{Path: "/root", Kind: Dir, Mode: 0o700},
		{Path: "/etc/passwd", Kind: File, Data: []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
			"user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/sbin/nologin\n")},
		{Path: "/etc/group", Kind: File, Data: []byte("root:x:0:\n" +
			"nogroup:x:65534:\n" +
			"user-defined-in-image:x:1000:\n" +
			"group-defined-in-image:x:50000:user-defined-in-image\n")},
		{Path: "/home/user-defined-in-image", Kind: Dir},
	}
	for _, f := range AgnhostFiles {
		src := filepath.Join(filesDir, f)
		if _, err := os.Stat(src); err != nil {
			return Spec{}, fmt.Errorf("agnhost's %s: %w (scripts/build-kubernetes.sh agnhost puts it beside the binary)", f, err)
		}
		entries = append(entries, Entry{Path: "/" + f, Kind: File, Source: src})
	}
	return Spec{
		Name:       AgnhostName,
		Layers:     []Layer{{Comment: "agnhost " + AgnhostTag + " (Kubernetes " + KubernetesVersion + "), porter's certificate", Entries: entries}},
		Entrypoint: []string{"/agnhost"},
		Env:        []string{envPath},
	}, nil
}

// KubernetesCache is where scripts/build-kubernetes.sh caches a release:
// ${TORTIE_CACHE:-/var/cache/tortie}/kubernetes/<version>. Its bin/ holds
// the binaries, share/agnhost/ agnhost's files, images/ the e2e images.
func KubernetesCache(version string) string {
	root := os.Getenv("TORTIE_CACHE")
	if root == "" {
		root = "/var/cache/tortie"
	}
	return filepath.Join(root, "kubernetes", version)
}

// cachedAgnhost is the agnhost binary and its files directory that
// scripts/build-kubernetes.sh agnhost cached in cache, once their VERSION
// is checked to be AgnhostTag (else the error says why it must be: want).
func cachedAgnhost(cache, want string) (binary, files string, err error) {
	files = filepath.Join(cache, "share", AgnhostName)
	v, err := os.ReadFile(filepath.Join(files, "VERSION"))
	if err != nil {
		return "", "", fmt.Errorf("%w (run scripts/build-kubernetes.sh agnhost)", err)
	}
	if got := strings.TrimSpace(string(v)); got != AgnhostTag {
		return "", "", fmt.Errorf("%s: agnhost %s, but %s", files, got, want)
	}
	return filepath.Join(cache, "bin", AgnhostName), files, nil
}

// WriteE2EImages writes the images the netpol e2e tests pull to
// <cache>/images/<name>.tar from what scripts/build-kubernetes.sh agnhost
// cached in cache (a KubernetesCache of KubernetesVersion): bin/agnhost,
// share/agnhost/{VERSION,localhost.crt,localhost.key}. It refuses an
// agnhost whose VERSION is not AgnhostTag, which would be imported under a
// name the suite does not ask for.
func WriteE2EImages(cache string) ([]Built, error) {
	binary, files, err := cachedAgnhost(cache, fmt.Sprintf("the e2e suite of Kubernetes %s pulls %s", KubernetesVersion, AgnhostRef))
	if err != nil {
		return nil, err
	}
	spec, err := AgnhostSpec(binary, files)
	if err != nil {
		return nil, err
	}
	b, err := spec.Write(filepath.Join(cache, "images"), E2ERegistry, AgnhostTag)
	if err != nil {
		return nil, err
	}
	return []Built{b}, nil
}
