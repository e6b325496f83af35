// Command tortie-cnp-conformance prepares a cluster for the
// network-policy-api conformance suite, which test/cnpconformance runs
// (docs/cnp-conformance.md tells the whole procedure).
//
//	tortie-cnp-conformance images [--cache DIR] [--out DIR]
//	    writes the image the suite's pods pull,
//	    registry.k8s.io/e2e-test-images/agnhost:2.45, to
//	    ${TORTIE_CACHE}/kubernetes/v1.37.2/images/cnp-conformance/agnhost.tar
//	    (from the agnhost scripts/build-kubernetes.sh agnhost cached) and
//	    prints it; every node imports it
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/tortie/tortie/pkg/images"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "images" {
		fmt.Fprintln(os.Stderr, "usage: tortie-cnp-conformance images [--cache DIR] [--out DIR]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("images", flag.ExitOnError)
	cache := fs.String("cache", images.KubernetesCache(images.KubernetesVersion), "the release's cache (scripts/build-kubernetes.sh agnhost fills it)")
	out := fs.String("out", "", "the directory of the archive (default: the cache's images/"+images.CNPConformanceImagesDir+")")
	fs.Parse(os.Args[2:])
	built, err := images.WriteCNPConformanceImages(*cache, *out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tortie-cnp-conformance: %v\n", err)
		os.Exit(1)
	}
	for _, b := range built {
		fmt.Printf("%-50s %s %6.1f MB %s\n", b.Ref, b.Digest, float64(b.Size)/1e6, b.Path)
	}
}
