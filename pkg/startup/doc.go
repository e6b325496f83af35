// Package startup is what tortie-node does once, before its dataplane
// components run, as calico-node's startup does: it settles the node's
// name and addresses and makes the datastore describe this host.
//
//   - The node name: the flag, else NODENAME, else the host name.
//   - The node's IPv4 and IPv6 addresses: given, or found by an
//     autodetection method (Calico's IP_AUTODETECTION_METHOD and
//     IP6_AUTODETECTION_METHOD: first-found, interface=REGEX,
//     skip-interface=REGEX, can-reach=DEST, cidr=CIDR[,CIDR]). The choice
//     over a list of interfaces is a pure function (Autodetect), so every
//     method is tested without touching the host.
//   - The Node resource: created, or updated with compare-and-swap and
//     retried on conflict, changing only the fields startup owns
//     (spec.bgp.ipv4Address/ipv6Address, asNumber when given, the labels it
//     was given, the tunnel addresses and the VXLAN MAC) and keeping
//     everything else others wrote (routeReflectorClusterID, other labels,
//     orchRefs).
//   - The node name file the CNI plugin reads (DefaultNodenameFile).
//   - Default IP pools when asked and no pool of that family exists.
//   - The tunnel addresses, from IPAM with intended use Tunnel, as Calico
//     allocates them: the VXLAN one (handle "vxlan-tunnel-addr-<node>",
//     type vxlanTunnelAddress, into spec.ipv4VXLANTunnelAddr, with a MAC)
//     when an enabled IPv4 pool that selects this node has vxlanMode Always
//     or CrossSubnet; the IP-in-IP one (handle "ipip-tunnel-addr-<node>",
//     type ipipTunnelAddress, into spec.bgp.ipv4IPIPTunnelAddr) likewise for
//     ipipMode. One mechanism serves both (tunnelKind): an address outside
//     the pools that ask for it is released and another allocated, and an
//     address no pool asks for is released and cleared from the Node.
//     After startup the agent's Tunnels component keeps doing this as pools
//     change (calico-node's allocate-tunnel-addrs), writing only when the
//     Node and the pools disagree.
//
// Whether this host can do IP-in-IP at all (the kernel's ipip module) is
// not startup's question: the routing component asks the kernel, and keeps
// the node not ready, naming the pools, when it cannot.
//
// What startup must never do: remove a field of the Node it does not own,
// overwrite a change made by someone else between its read and its write
// (every write is a compare-and-swap), or touch routes and links.
package startup
