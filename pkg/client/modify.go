package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// conflictRetries bounds read-modify-write loops that lose a race.
const conflictRetries = 5

// modify reads a resource, changes it with fn and writes it back with a
// compare-and-swap on the revision it read, retrying when someone else wrote
// in between. fn must be safe to run more than once.
func (c *Client) modify(ctx context.Context, k *v3.KindInfo, ns, name string, fn func(v3.Resource) (v3.Resource, error)) (v3.Resource, error) {
	for attempt := 0; ; attempt++ {
		cur, err := c.Get(ctx, k, ns, name)
		if err != nil {
			return nil, err
		}
		next, err := fn(cur)
		if err != nil {
			return nil, err
		}
		next.SetResourceVersion(cur.GetResourceVersion())
		out, err := c.Update(ctx, next)
		if errors.Is(err, datastore.ErrConflict) && attempt < conflictRetries {
			continue
		}
		return out, err
	}
}

// LabelChange is one `tortie label` request.
type LabelChange struct {
	Key, Value string
	Remove     bool
	Overwrite  bool
}

// Label sets or removes one label. Setting a label that exists with another
// value needs Overwrite; removing one that is absent is an error, as in
// calicoctl.
func (c *Client) Label(ctx context.Context, k *v3.KindInfo, ns, name string, ch LabelChange) (v3.Resource, error) {
	return c.modify(ctx, k, ns, name, func(r v3.Resource) (v3.Resource, error) {
		labels := copyMap(r.GetLabels())
		old, had := labels[ch.Key]
		switch {
		case ch.Remove && !had:
			return nil, fmt.Errorf("%s %s has no label %q", k.Kind, nsName(ns, name), ch.Key)
		case ch.Remove:
			delete(labels, ch.Key)
		case had && old != ch.Value && !ch.Overwrite:
			return nil, fmt.Errorf("%s %s already has label %s=%s; use --overwrite to change it", k.Kind, nsName(ns, name), ch.Key, old)
		default:
			labels[ch.Key] = ch.Value
		}
		if len(labels) == 0 {
			labels = nil
		}
		r.SetLabels(labels)
		return r, nil
	})
}

// Patch applies a JSON merge patch (RFC 7386) to a resource. The result is
// decoded as strictly as a manifest, then defaulted and validated; name,
// namespace and kind cannot be patched.
func (c *Client) Patch(ctx context.Context, k *v3.KindInfo, ns, name string, patch []byte) (v3.Resource, error) {
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, fmt.Errorf("patch is not valid JSON: %w", err)
	}
	if _, ok := p.(map[string]any); !ok {
		return nil, fmt.Errorf("patch must be a JSON object")
	}
	return c.modify(ctx, k, ns, name, func(r v3.Resource) (v3.Resource, error) {
		cur, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		var doc any
		if err := json.Unmarshal(cur, &doc); err != nil {
			return nil, err
		}
		merged, err := json.Marshal(MergePatch(doc, p))
		if err != nil {
			return nil, err
		}
		next, err := v3.Decode(merged)
		if err != nil {
			return nil, fmt.Errorf("patched %s %s: %w", k.Kind, nsName(ns, name), err)
		}
		if v3.KindOf(next) != k || next.GetName() != r.GetName() || next.GetNamespace() != r.GetNamespace() {
			return nil, fmt.Errorf("a patch cannot change kind, apiVersion, metadata.name or metadata.namespace")
		}
		return next, nil
	})
}

// MergePatch applies an RFC 7386 JSON merge patch to a decoded JSON value:
// objects merge recursively, null deletes, anything else replaces.
func MergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = MergePatch(tm[k], v)
	}
	return tm
}
