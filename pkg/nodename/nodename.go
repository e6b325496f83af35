// Package nodename is the node name file: tortie-node writes the name it
// registered the node under (pkg/startup), and the CNI plugin reads it
// (pkg/cni), so both agree even when the host name differs from the node
// name. It imports nothing, so the plugin knows the path without linking
// node startup.
package nodename

// DefaultFile is where the node agent writes the node name when not told
// otherwise, and where the plugin looks for it.
const DefaultFile = "/var/lib/tortie/nodename"
