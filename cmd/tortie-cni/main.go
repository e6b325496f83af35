// Command tortie-cni is tortie's CNI plugin. Install it as /opt/cni/bin/tortie
// and /opt/cni/bin/tortie-ipam (a copy or a link): it acts on the name it is
// called by. See pkg/cni.
package main

import "github.com/tortie/tortie/pkg/cni"

func main() { cni.Main() }
