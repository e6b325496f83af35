// Package datastore is tortie's raw key/value store: keys, bytes and etcd
// revisions on top of etcd v3, plus an embedded single-member etcd server for
// one machine.
//
// It gives compare-and-swap writes (create if absent, update/delete at a
// revision), all-or-nothing transactions, and a gapless watch: it lists,
// watches, resumes a lost stream where it was, and when the history it needs
// was compacted re-lists and reports only the difference. Transient failures (leader change, lost connection) are retried
// here, and a retried write that may already have landed is recognised as our
// own rather than applied twice or reported as a conflict.
//
// It must never know about resource kinds, JSON or Calico's key layout
// (pkg/client owns those), never hide a real conflict or a lost event from its
// caller, and the embedded server must never open a peer port (it opens its
// client port and nothing else).
package datastore
