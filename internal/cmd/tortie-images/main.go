// Command tortie-images writes tortie's container images as OCI archives,
// without a container daemon and without the network (`make images`):
//
//	tortie-images --build --bin bin/static --out bin/images --tag v0.1.0-dev
//
// With --build it first builds the static programs (CGO_ENABLED=0) from
// the module in the working directory into --bin; else it reads them
// there. It writes <out>/node.tar, cni.tar and kube-controllers.tar
// (tortie-node, tortie, tortie-cni, tortie-install-cni,
// tortie-kube-controllers and this machine's nft and ip), and the lab's
// test images pause.tar and echoserver.tar, all importable with
// `ctr -n k8s.io images import`. It prints each image's reference, digest
// and size. See pkg/images.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/tortie/tortie/pkg/images"
)

func main() {
	bin := flag.String("bin", "bin/static", "directory of the static programs")
	out := flag.String("out", "bin/images", "directory the archives are written to")
	tag := flag.String("tag", images.DefaultTag, "tortie's images' tag (not latest)")
	registry := flag.String("registry", images.DefaultRegistry, "registry and namespace of tortie's images' names")
	only := flag.String("only", "", "comma-separated images of tortie's to build, and not the test images (default: "+strings.Join(images.Names, ",")+" and the test images)")
	build := flag.Bool("build", false, "first build the programs, static, from the module in the working directory into --bin")
	goflags := flag.String("goflags", "", "space-separated flags added to go build with --build (such as -buildvcs=false)")
	flag.Parse()
	fail := func(code int, format string, args ...any) {
		fmt.Fprintf(os.Stderr, "tortie-images: "+format+"\n", args...)
		os.Exit(code)
	}
	if flag.NArg() > 0 {
		fail(2, "no arguments expected, got %q", flag.Args())
	}
	if *tag == "" || *tag == "latest" {
		fail(2, "--tag %q: give a version, so that imagePullPolicy IfNotPresent uses the imported image", *tag)
	}
	if *build {
		if err := images.BuildPrograms(context.Background(), ".", *bin, strings.Fields(*goflags)); err != nil {
			fail(1, "%v", err)
		}
	}
	var built []images.Built
	if *only == "" {
		var err error
		if built, err = images.WriteAll(*bin, *out, *registry, *tag); err != nil {
			fail(1, "%v", err)
		}
	} else {
		for _, name := range strings.Split(*only, ",") {
			spec, err := images.SpecFor(name, *bin)
			if err != nil {
				fail(1, "%s: %v", name, err)
			}
			b, err := spec.Write(*out, *registry, *tag)
			if err != nil {
				fail(1, "%s: %v", name, err)
			}
			built = append(built, b)
		}
	}
	for _, b := range built {
		fmt.Printf("%-45s %s %6.1f MB %s\n", b.Ref, b.Digest, float64(b.Size)/1e6, b.Path)
	}
}
