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
//     was given, the VXLAN tunnel address and MAC) and keeping everything
//     else others wrote (routeReflectorClusterID, other labels, orchRefs).
//   - The node name file the CNI plugin reads (DefaultNodenameFile).
//   - Default IP pools when asked and no pool of that family exists.
//   - The VXLAN tunnel address, from IPAM (handle
//     "vxlan-tunnel-addr-<node>", intended use Tunnel), when a pool that
//     applies to this node has vxlanMode Always or CrossSubnet.
//
// IP-in-IP: this kernel family has no ipip module here, so a pool with
// ipipMode other than Never cannot be honoured. Startup does not fail (the
// pool's addresses still route natively over BGP where the underlay
// allows) but says so: a warning in the log and in Result.Warnings, which
// the agent exposes in its status.
//
// What startup must never do: remove a field of the Node it does not own,
// overwrite a change made by someone else between its read and its write
// (every write is a compare-and-swap), or touch routes and links.
package startup
