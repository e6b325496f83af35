package images

import (
	"fmt"
	"path/filepath"
)

// The image the network-policy-api conformance suite
// (sigs.k8s.io/network-policy-api/conformance v0.3.0, test/cnpconformance)
// pulls. Its base manifests (conformance/base/manifests.yaml) run every
// container of their ten pods from registry.k8s.io/e2e-test-images/
// agnhost:2.45: the servers as `/bin/bash -c "/agnhost serve-hostname
// ..."`, `/bin/bash -c "/agnhost netexec ..."` or `/bin/bash -c "/agnhost
// porter"`, the client with neither command nor args (upstream's image
// then runs its CMD, `pause`), and every probe is `/agnhost connect
// HOST:PORT --timeout=... --protocol=...` exec'd in the client.
//
// The archive holds the agnhost that WriteE2EImages packs (AgnhostTag,
// built from source: the suite uses only serve-hostname, netexec, porter,
// pause and connect, whose flags it passes are all there) under the tag the
// suite asks for, plus what AgnhostSpec leaves out and the suite needs:
// this machine's bash at /bin/bash, and `pause` when a container gives no
// command.
const (
	// CNPConformanceAgnhostTag is the agnhost tag of the base manifests of
	// network-policy-api v0.3.0.
	CNPConformanceAgnhostTag = "2.45"
	// CNPConformanceImagesDir is where, under a KubernetesCache's images/,
	// WriteCNPConformanceImages puts its archive by default: a directory of
	// its own, since the archive is agnhost.tar like WriteE2EImages'.
	CNPConformanceImagesDir = "cnp-conformance"
)

// CNPConformanceAgnhostRef is the image's full reference:
// registry.k8s.io/e2e-test-images/agnhost:2.45.
var CNPConformanceAgnhostRef = Ref(E2ERegistry, AgnhostName, CNPConformanceAgnhostTag)

// CNPConformanceAgnhostSpec is AgnhostSpec(binary, filesDir) with a second
// layer holding this machine's /bin/bash, with the links on the way to it,
// its loader and its libraries (HostPrograms), and the entrypoint
// `/agnhost pause`.
//
// Upstream's image has ENTRYPOINT ["/agnhost"] and CMD ["pause"]; Spec has
// no command, so the entrypoint carries both. That is the same for a pod
// that gives neither command nor args (the suite's client containers: they
// run `/agnhost pause`) and for one that gives a command (the suite's
// servers, `/bin/bash -c ...`: Kubernetes then ignores the image's
// entrypoint and command). Only a pod giving args without a command would
// see a difference, and the suite has none.
func CNPConformanceAgnhostSpec(binary, filesDir string) (Spec, error) {
	s, err := AgnhostSpec(binary, filesDir)
	if err != nil {
		return Spec{}, err
	}
	bash, err := HostPrograms("/bin/bash")
	if err != nil {
		return Spec{}, fmt.Errorf("the conformance pods' /bin/bash: %w", err)
	}
	s.Layers = append(s.Layers, Layer{Comment: "this machine's bash, its libraries and loader (the conformance pods run /bin/bash -c)", Entries: bash})
	s.Entrypoint = []string{"/agnhost", "pause"}
	return s, nil
}

// WriteCNPConformanceImages writes the image the conformance suite pulls,
// as CNPConformanceAgnhostRef, to <out>/agnhost.tar (out defaults to
// <cache>/images/CNPConformanceImagesDir), from what scripts/
// build-kubernetes.sh agnhost cached in cache (a KubernetesCache of
// KubernetesVersion), as WriteE2EImages reads it: bin/agnhost and
// share/agnhost/{VERSION,localhost.crt,localhost.key}. Like WriteE2EImages
// it refuses an agnhost whose VERSION is not AgnhostTag: the image is that
// known agnhost under another tag, not whatever was cached.
func WriteCNPConformanceImages(cache, out string) ([]Built, error) {
	binary, files, err := cachedAgnhost(cache, fmt.Sprintf("%s is made of agnhost %s", CNPConformanceAgnhostRef, AgnhostTag))
	if err != nil {
		return nil, err
	}
	spec, err := CNPConformanceAgnhostSpec(binary, files)
	if err != nil {
		return nil, err
	}
	if out == "" {
		out = filepath.Join(cache, "images", CNPConformanceImagesDir)
	}
	b, err := spec.Write(out, E2ERegistry, CNPConformanceAgnhostTag)
	if err != nil {
		return nil, err
	}
	return []Built{b}, nil
}
