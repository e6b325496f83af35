package client

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// Labels and annotations Calico's client adds to policies.
const (
	TierLabel          = "projectcalico.org/tier"
	MetadataAnnotation = "projectcalico.org/metadata"
	// Workload endpoints carry their namespace and orchestrator as labels so
	// that selectors can match on them.
	WorkloadNamespaceLabel    = "projectcalico.org/namespace"
	WorkloadOrchestratorLabel = "projectcalico.org/orchestrator"
)

// storedMeta is the content of the metadata annotation Calico's client puts
// on a policy: its name, the same as metadata.name and the key's last
// segment.
type storedMeta struct {
	Name string `json:"name"`
}

// encode renders r as Calico stores it: resourceVersion dropped (it is the
// key's mod revision), policies labelled with their tier and annotated with
// their name. r itself is not modified.
func encode(r v3.Resource) (key string, value []byte, err error) {
	k := v3.KindOf(r)
	if k == nil {
		return "", nil, fmt.Errorf("unknown kind %q", r.GetObjectKind().GroupVersionKind().Kind)
	}
	obj := shallowCopy(r)
	storedForm(obj)
	value, err = json.Marshal(obj)
	if err != nil {
		return "", nil, fmt.Errorf("encoding %s %s: %w", k.Kind, r.GetName(), err)
	}
	return Key(k, r.GetNamespace(), r.GetName()), value, nil
}

// storedForm makes a copy of a resource what Calico stores: no
// resourceVersion, and the labels and annotations Calico adds. The label
// and annotation maps are replaced, not changed, so a shallow copy shares
// nothing it changes with the original.
func storedForm(obj v3.Resource) {
	obj.SetResourceVersion("")
	if t, ok := obj.(v3.Tiered); ok {
		labels := copyMap(obj.GetLabels())
		labels[TierLabel] = t.PolicyTier()
		obj.SetLabels(labels)
		ann := copyMap(obj.GetAnnotations())
		md, _ := json.Marshal(storedMeta{Name: obj.GetName()})
		ann[MetadataAnnotation] = string(md)
		obj.SetAnnotations(ann)
	}
	if wep, ok := obj.(*v3.WorkloadEndpoint); ok {
		labels := copyMap(wep.Labels)
		labels[WorkloadNamespaceLabel] = wep.Namespace
		labels[WorkloadOrchestratorLabel] = wep.Spec.Orchestrator
		wep.Labels = labels
	}
}

// decode reads a stored value. It is lenient about fields it does not know:
// a newer Calico may have written them, and reading must not fail on that.
// The name is the stored metadata.name (which Calico keeps equal to the key's
// name segment); the metadata annotation on policies is Calico's own and is
// not shown, as calicoctl does not show it.
func decode(k *v3.KindInfo, kv *datastore.KV) (v3.Resource, error) {
	r := k.NewObject()
	if err := v3.UnmarshalStored(kv.Value, r); err != nil {
		return nil, notValid(k, kv, err)
	}
	r.SetResourceVersion(strconv.FormatInt(kv.Revision, 10))
	if r.GetName() == "" {
		r.SetName(kv.Key[strings.LastIndex(kv.Key, "/")+1:])
	}
	if ann := r.GetAnnotations(); ann != nil {
		if _, ok := ann[MetadataAnnotation]; ok {
			delete(ann, MetadataAnnotation)
			if len(ann) == 0 {
				ann = nil
			}
			r.SetAnnotations(ann)
		}
	}
	return r, nil
}

// decodeIdentity decodes only what an update carries over from the stored
// object, its uid and creationTimestamp (see stamp): the rest is scanned but
// not built, which for a policy of 100 rules was most of the work of
// decoding it. A stored value that is not JSON, or whose metadata does not
// decode, is an error as with decode.
func decodeIdentity(k *v3.KindInfo, kv *datastore.KV) (v3.Resource, error) {
	var stored struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(kv.Value, &stored); err != nil {
		return nil, notValid(k, kv, err)
	}
	r := k.NewObject()
	r.SetUID(stored.Metadata.UID)
	r.SetCreationTimestamp(stored.Metadata.CreationTimestamp)
	r.SetResourceVersion(strconv.FormatInt(kv.Revision, 10))
	return r, nil
}

// notValid is the error for a stored value that does not decode as k.
func notValid(k *v3.KindInfo, kv *datastore.KV, err error) error {
	return fmt.Errorf("stored value at %s is not a valid %s: %w", kv.Key, k.Kind, err)
}

// stamp gives a new object its identity, or carries the stored one over on
// update: uid and creationTimestamp never change once written.
func stamp(r v3.Resource, existing v3.Resource, now metav1.Time) {
	if existing != nil {
		r.SetUID(existing.GetUID())
		r.SetCreationTimestamp(existing.GetCreationTimestamp())
		return
	}
	r.SetUID(newUID())
	r.SetCreationTimestamp(now)
}

func newUID() types.UID { return types.UID(uuid.NewString()) }

// shallowCopy copies r's struct and nothing below it: encode sets fields of
// the copy and gives it new label and annotation maps, which leaves r as it
// was, and marshals the copy, which reads the rest where r has it.
func shallowCopy(r v3.Resource) v3.Resource {
	v := reflect.ValueOf(r)
	cp := reflect.New(v.Type().Elem())
	cp.Elem().Set(v.Elem())
	return cp.Interface().(v3.Resource)
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}
