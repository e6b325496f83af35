// Package wireguard is tortie's WireGuard driver: this host's private key,
// its WireGuard device, and the device's peers (the other hosts it encrypts
// to). It does I/O and nothing else; which peers a host has is computed
// elsewhere.
//
//   - LoadOrCreateKey keeps the private key in a file of mode 0600 (by
//     default DefaultKeyFile), made once and kept across restarts.
//   - Ensure makes the device (Calico's name, DeviceName) or takes over the
//     kernel device an earlier run left, and sets its key, listening port,
//     firewall mark, MTU, state and address. Where the kernel has WireGuard
//     the device is the kernel's, configured over generic netlink (wgctrl).
//     Where it has not (ModeAuto), or when asked (ModeUserspace), the device
//     is WireGuard's userspace implementation running in this process on a
//     TUN interface, configured with the same wgtypes.Config in WireGuard's
//     text protocol. Everything above the device is the same for both.
//   - SetPeers makes the device's peers exactly a given list, writing only the
//     peers that differ, so established sessions are kept.
//   - Status reports the device and each peer's latest handshake and
//     counters, as `wg show` does.
//
// A userspace device runs as long as the process that runs it, but its TUN
// interface is persistent: when the process ends, the interface and the
// routes through it stay, and the traffic they carry is dropped (never sent
// unencrypted) until the next run attaches to the interface again. Remove
// deletes it when encryption is turned off.
//
// A userspace device's UDP sockets are opened in the namespace of the thread
// that brings the device up or changes its port, so with Config.NetnsPath
// those steps run on a thread in that namespace. WireGuard's own watcher of
// the interface runs on any thread: it is given a view of the interface
// (nsTUN) that passes on MTU changes only, and reads the MTU in the device's
// namespace.
package wireguard
