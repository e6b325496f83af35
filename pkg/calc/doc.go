// Package calc is the calculation graph of tortie-node: it turns the
// datastore's resources (endpoints, network sets, profiles, tiers, policies)
// into the desired policy state of one host, the model in model.go, which
// the dataplane drivers render.
//
// It is fed updates one at a time (OnUpdate), told when the first complete
// snapshot has been delivered (OnInSync), and asked for what changed
// (Flush) or for everything (State). Each update costs in proportion to what
// it affects, not to the size of the cluster: selectors are indexed by the
// labels they need (index.go), a selector is evaluated against the cluster
// only when it first comes into use, IP set members move as deltas, and
// policies and sets that no local endpoint needs are tracked but not
// computed.
//
// Files: graph.go is the Graph and where updates enter; items.go the
// labelled things selectors match (endpoints, network sets) and the labels
// they inherit from profiles; profiles.go and policies.go (with tiers)
// resolve rules and track what is active on this host; ipsets.go counts IP
// set members; output.go renders endpoints, State and Flush.
//
// The package must never do I/O, start goroutines, read clocks or depend
// on map iteration order in its output: the same updates always give the
// same state, which is what makes it testable against a from-scratch
// reference. It must never enforce a staged policy, and never let an
// endpoint whose profile is missing look as if it had no profile: the
// driver fails closed on ProfileRef.Missing.
package calc
