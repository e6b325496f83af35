// Package routing is the routing half of tortie-node: it makes one host
// route to every other host's workloads, as Calico's confd + BIRD + felix
// route manager do together.
//
// It has two layers.
//
// The calculation (calc.go) is pure: from a Snapshot of the datastore
// (Nodes, BGPConfigurations, BGPPeers, IPPools, IPAM blocks, this node's
// WorkloadEndpoints) and the routes learned over BGP, DesiredPeers,
// DesiredAdvertisements and DesiredRoutes compute the BGP sessions, the
// announced prefixes and the kernel routes, VXLAN tunnel endpoints and
// IP-in-IP routes included. No I/O, no clocks, no goroutines: table-driven tests cover it.
//
// The Component (component.go) does the I/O, as one component of the
// agent's loop (pkg/node): the agent's syncer delivers the kinds it asks
// for (IPAM blocks as a raw kind), OnUpdate folds them into the snapshot,
// and after the first complete snapshot each Apply drives pkg/bgp
// (SetPeers, SetAdvertisements) and pkg/dataplane/routes (Reconciler,
// EnsureVXLAN, VXLAN, EnsureIPIP) with what the calculation says. Learned routes flow
// back from the speaker: they wake the loop (Wake) for the next Apply. The
// loop's periodic full apply (every Config.ResyncInterval) repairs kernel
// drift. It exposes Ready, Status and an HTTP handler (StatusPath,
// /status/routing on the agent's health address) that `tortie node status`
// reads.
//
// Restarts are graceful both ways: on the way out the speaker stops
// without a NOTIFICATION (peers keep our routes for the restart time) and
// the kernel keeps its routes; on the way in, routes a previous run left
// to other hosts are kept until every session has been up for a few
// seconds (or the restart time passes), so forwarding never stops.
//
// Secrets: BGPPeer password.secretKeyRef and BGPConfiguration
// nodeMeshPassword name a Kubernetes secret, and there is no Kubernetes.
// FileSecrets reads <dir>/<secret>/<key> (default dir /etc/tortie/secrets:
// the layout of a mounted secret volume), else the environment variable
// TORTIE_SECRET_<SECRET>_<KEY>. A missing, non-optional secret leaves that
// session out and says so in Status.Warnings: a session is never brought
// up without the password it asks for.
//
// Encapsulation is never dropped: a remote block of a pool that asks for
// VXLAN or IP-in-IP is routed through its tunnel or not at all. IP-in-IP
// is Calico's: routes learned over BGP for a pool with ipipMode Always, or
// CrossSubnet when the next hop is outside this node's subnet, go "via
// <next hop> dev tunl0 onlink", and the component keeps tunl0 up with its
// MTU and the Node's ipv4IPIPTunnelAddr (routes.EnsureIPIP). Whether the
// kernel can do IP-in-IP at all is asked once (routes.IPIPSupported; again
// at each full apply while the answer is no). Where it cannot (no ipip
// module), or VXLAN is disabled by FelixConfiguration, the apply fails with
// an error naming each pool, its CIDR and mode and what is missing: the
// node is not ready, and Status.LastError (what `tortie node status`
// prints) says why.
//
// WireGuard (Config.Wireguard, docs/wireguard.md): DesiredWireguard computes
// the peers (other Nodes with a published key) and a routing table of its
// own (table 1: each peer's blocks, borrowed addresses and tunnel address
// through the device; throw for this node's addresses inside a peer's
// block), and the component drives pkg/dataplane/wireguard with them: the
// device, its peers, the rule "not fwmark 0x100000 lookup 1", and a second
// route reconciler on that table. With WireGuard off, the first apply
// removes what an earlier run left of it. The main table is not touched:
// the device's own packets carry the mark and leave by the BGP, VXLAN or
// IP-in-IP routes as before.
//
// What this package must never do: program anything before the first
// complete snapshot, touch a route that is not tortie's (the reconciler's
// protocol guarantees it), or switch network namespaces (a BGP speaker
// lives in its process's namespace: run the agent there).
package routing
