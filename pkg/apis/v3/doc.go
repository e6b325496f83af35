// Package v3 holds tortie's resource model: Calico's projectcalico.org/v3 kinds
// with Calico's JSON field names, so an operator's existing manifests decode
// unchanged, plus the defaulting and validation every writer applies before a
// resource reaches the datastore.
//
// It is pure: no I/O, no datastore knowledge beyond each kind's plural (the
// etcd key segment). Decoding is strict (an unknown or duplicated field is an
// error), and every validation error carries the path of the offending field.
package v3
