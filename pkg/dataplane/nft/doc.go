// Package nft is tortie's nftables policy driver: it makes one inet table
// (Config.TableName, "tortie") enforce the desired policy state that
// pkg/calc computes for this host, through sigs.k8s.io/knftables and the
// nft binary. README.md explains the ruleset and why it is shaped so.
//
// Data in, one transaction out: Apply takes calc.Changes and writes the
// smallest transaction that brings the table to the new state; Resync
// lists the table and repairs whatever differs. Policy is compiled so that
// a packet's cost does not grow with the number of rules (program.go).
//
// What it must never do:
//
//   - Flush or delete the table, or any chain, set or map a packet may still
//     be jumping to: a restart reconciles in place, a changed program is
//     updated in one transaction (changed classes get new chains beside the
//     old ones, their class map elements are replaced), and unreferenced
//     objects are deleted only by the sync after the one that stopped
//     referring to them.
//   - Rebuild an IP set to change its members: membership changes are
//     element adds and deletes.
//   - Let traffic through when it does not know better: an unknown workload
//     interface, a missing profile, an endpoint with nothing that allows
//     are all dropped (fail closed). Nothing is programmed before the
//     calculation graph is in sync.
//   - Touch anything outside its own table, or decide policy: what applies
//     to which endpoint is pkg/calc's job.
package nft
