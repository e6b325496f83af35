// Command tortie-images writes tortie's container images as OCI archives,
// without a container daemon and without the network (`make images`):
//
//	tortie-images --bin bin/static --out bin/images --tag v0.1.0-dev
//
// reads the static binaries from --bin (tortie-node, tortie, tortie-cni,
// tortie-install-cni, tortie-kube-controllers; built with CGO_ENABLED=0)
// and this machine's nft and ip, and writes <out>/node.tar, cni.tar and
// kube-controllers.tar, importable with `ctr -n k8s.io images import`.
// It prints each image's reference, digest and size. See pkg/images.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/tortie/tortie/pkg/images"
)

func main() {
	bin := flag.String("bin", "bin/static", "directory of the static tortie binaries")
	out := flag.String("out", "bin/images", "directory the archives are written to")
	tag := flag.String("tag", images.DefaultTag, "the images' tag (not latest)")
	registry := flag.String("registry", images.DefaultRegistry, "registry and namespace of the images' names")
	only := flag.String("only", "", "comma-separated images to build (default: "+strings.Join(images.Names, ",")+")")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "tortie-images: no arguments expected, got %q\n", flag.Args())
		os.Exit(2)
	}
	if *tag == "" || *tag == "latest" {
		fmt.Fprintf(os.Stderr, "tortie-images: --tag %q: give a version, so that imagePullPolicy IfNotPresent uses the imported image\n", *tag)
		os.Exit(2)
	}
	names := images.Names
	if *only != "" {
		names = strings.Split(*only, ",")
	}
	for _, name := range names {
		spec, err := images.SpecFor(name, *bin)
		if err == nil {
			var b images.Built
			b, err = spec.Write(*out, *registry, *tag)
			if err == nil {
				fmt.Printf("%-45s %s %6.1f MB %s\n", b.Ref, b.Digest, float64(b.Size)/1e6, b.Path)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "tortie-images: %s: %v\n", name, err)
			os.Exit(1)
		}
	}
}
