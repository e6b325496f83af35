// Package lab builds a whole tortie cluster on one machine out of network
// namespaces, with the real parts: an embedded etcd (`tortie datastore
// serve`), one real tortie-node per host, workloads made by the real CNI
// plugin, real BGP (and BIRD 2 as a top-of-rack router). It is what
// `tortie lab` drives, for demos and for end-to-end tests.
//
//	root ns:   tortie datastore serve on 198.18.R.254 (<root leg>, named from the lab)
//	NAME-fab:  br0 (198.18.R.0/24) ─┬─ NAME-h1 … (eth0 at 198.18.R.i; tortie-node)
//	                                ├─ NAME-rt (router at .253, every host's default gateway;
//	           br1 (198.19.R.0/24) ─┘           BIRD for --topology tor)
//	NAME-<ns>-<workload>: eth0 made by the CNI plugin in its host; `tortie lab serve` answers
//
// What it must never do:
//
//   - touch anything it did not make: every namespace, interface, process
//     and file is named from the lab name and recorded in the state file
//     (/run/tortie/lab/NAME/state.json) before it is made, so that Down
//     removes exactly that, also after a crash;
//   - send traffic anywhere but between the namespaces it made (the root
//     namespace is only the datastore's address);
//   - overwrite a CLI config file (/etc/tortie/tortie.cfg) it did not write;
//   - leave a lab half made: Up that fails or is interrupted (its context
//     ends: Ctrl-C, SIGTERM) removes what it had made with Down's own
//     teardown, run to the end, before it returns.
//
// Every function that runs a command, waits, takes a lock or talks over
// the network takes a context first and stops when it ends, with an error
// wrapping ErrInterrupted; reading and writing the lab's own state file
// does not need one.
package lab
