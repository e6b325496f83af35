// Package bgp is tortie's BGP speaker: a declarative wrapper around an embedded
// GoBGP v4 server.
//
// The agent says what it wants — the peers this node should have
// (SetPeers) and the prefixes it should announce (SetAdvertisements) — and
// the speaker diffs that against what GoBGP is doing and applies only the
// difference. Out come the best paths learned from peers (Routes, a stream of
// added and withdrawn routes, and LearnedRoutes, a snapshot for resyncs) and
// the state of every session (Peers), which `tortie node status` prints.
//
// What this package must never do:
//   - touch the kernel routing table or any link: learned routes are handed to
//     the agent, which programs them (pkg/dataplane/routes);
//   - read or write the datastore: peers and advertisements are computed
//     elsewhere (the calculation graph) and passed in as plain data;
//   - switch network namespaces. GoBGP dials its peers from goroutines it
//     starts itself, and Go never runs a new goroutine on a thread whose
//     namespace was changed, so a goroutine locked into a namespace cannot
//     hold a speaker. A speaker lives in the network namespace of its
//     process; to run one elsewhere, start the process there (ip netns exec),
//     as the tests and the lab do.
package bgp
