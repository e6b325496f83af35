// Package routes is tortie's routing driver: it makes one network
// namespace's kernel routing state match a desired state computed elsewhere.
//
// It owns four kinds of kernel object, and nothing else:
//
//   - Routes in one routing table that carry tortie's route protocol number
//     (ProtocolTortie, 116, unless Options.Protocol says otherwise): /32 and
//     /128 host routes to local workloads, blackholes for blocks affine to this
//     host, and routes to other hosts' blocks (learned over BGP, or computed
//     from the datastore and sent through the VXLAN or IP-in-IP device). The Reconciler
//     adds, replaces and deletes them so that the table matches Set.
//   - The VXLAN tunnel device (Calico's vxlan.calico): EnsureVXLAN creates it
//     or fixes it in place.
//   - The static FDB (MAC → remote node address) and neighbour (tunnel address
//     → MAC) entries on that device, reconciled by VXLAN.
//   - The IP-in-IP device (tunl0, the kernel's fallback ipip device):
//     EnsureIPIP sets its MTU, state and tunnel address (creating it if the
//     kernel has the ipip module but not the device); IPIPSupported says
//     whether this kernel can have it. Both tunnel devices are tuned by one
//     function (tunnel.go).
//
// Every operation goes through a *netlink.Handle that the caller opened in the
// target namespace (netlink.NewHandleAt), so the driver never switches the
// namespace of an OS thread and is safe to use from any goroutine.
//
// What it must never do:
//
//   - Touch a route whose protocol is not ours, even when it is in the way of
//     a desired route: such a conflict is reported, not resolved.
//   - Flush a table, or delete and re-create anything that already matches:
//     a restart reconciles in place and packets in flight keep flowing.
//   - Decide anything. Which routes, devices and tunnel endpoints should
//     exist is policy that belongs to the calculation graph and the agent;
//     this package only diffs and applies, and reports what it did.
package routes
