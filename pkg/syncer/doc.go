// Package syncer feeds tortie-node from the datastore: for every resource
// kind the agent needs it lists then watches the kind's etcd prefix,
// decodes each value into a v3 resource (or, for a raw kind outside the v3
// API such as IPAM blocks, hands the value on undecoded) and hands the
// changes over in batches, with one "in sync" signal once every prefix has delivered its
// first complete snapshot.
//
// After a resync (a compacted watch revision, a lost connection, a watch
// restarted after a fatal error) the consumer is told exactly the
// difference, deletions included, so whatever it builds from the updates
// converges to the datastore's state.
//
// It must never block the datastore's watchers on a slow consumer (updates
// queue here and are taken as one batch), never crash or stop on a value it
// cannot decode (it is logged and skipped; a key that held a good value
// before is reported deleted), never report in sync before every prefix is,
// and never interpret the resources: what they mean is the consumers'
// business (pkg/calc, pkg/routing and the agent's other components).
package syncer
