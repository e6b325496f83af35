package client

import (
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// DecodeKV reads a value stored under kind k's prefix into a resource, as
// Get and List do: resourceVersion from the KV's revision, the name as
// stored (the key's last segment when the value has none), Calico's metadata
// annotation on policies left out. It is for readers
// that watch the datastore directly (the agent's syncer); it neither
// defaults nor validates, and is lenient about unknown fields.
func DecodeKV(k *v3.KindInfo, kv *datastore.KV) (v3.Resource, error) {
	return decode(k, kv)
}
