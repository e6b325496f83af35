// Command tortie-cni is tortie's CNI plugin. Install it as /opt/cni/bin/tortie
// and /opt/cni/bin/tortie-ipam, or in place of Calico's plugins as
// /opt/cni/bin/calico and /opt/cni/bin/calico-ipam (a copy or a link): it
// acts on the name it is called by and refuses any other. See pkg/cni.
package main

import (
	"os"

	"github.com/tortie/tortie/pkg/cni"
	"github.com/tortie/tortie/pkg/version"
)

func main() {
	// Run by hand (no CNI_COMMAND, e.g. `tortie-cni --version`), the plugin
	// prints its version line; only then is the build information read, so
	// runtimes' invocations pay nothing for it.
	if os.Getenv("CNI_COMMAND") == "" {
		cni.Version = version.Get().String()
	}
	cni.Main()
}
