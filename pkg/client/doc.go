// Package client is the only writer of v3 resources. It turns typed resources
// into Calico's etcdv3 layout (keys, compact JSON, uid and creationTimestamp,
// the tier label and metadata annotation on policies) and back, defaults and
// validates everything before the first write, and applies many documents as
// one transaction when the store allows it.
//
// It must never write a resource that did not pass v3.Validate, and never
// write part of a batch without saying exactly which part.
package client
