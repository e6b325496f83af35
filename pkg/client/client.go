package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// Client reads and writes v3 resources in a datastore.
type Client struct {
	be          datastore.Backend
	initialized atomic.Bool
	// Now is the clock for creationTimestamp; tests may replace it.
	Now func() time.Time
}

// New returns a client on an open backend. The client does not own it.
func New(be datastore.Backend) *Client {
	return &Client{be: be, Now: time.Now}
}

// Backend exposes the raw store, for commands that need keys (ipam, status).
func (c *Client) Backend() datastore.Backend { return c.be }

func (c *Client) now() metav1.Time {
	return metav1.NewTime(c.Now().UTC().Truncate(time.Second))
}

// Get reads one resource. A missing one is an error wrapping
// datastore.ErrNotFound and naming the kind and name. The built-in profile
// projectcalico-default-allow is there without being stored, as in Calico.
func (c *Client) Get(ctx context.Context, k *v3.KindInfo, ns, name string) (v3.Resource, error) {
	if err := checkNamespace(k, ns); err != nil {
		return nil, err
	}
	if isDefaultAllow(k, name) {
		return DefaultAllowProfile(), nil
	}
	kv, err := c.be.Get(ctx, Key(k, ns, name))
	if err != nil {
		return nil, resourceError(k, ns, name, err)
	}
	return decode(k, kv)
}

// List reads every resource of a kind, of one namespace when ns is set,
// sorted by namespace then name. Profiles include the built-in
// projectcalico-default-allow.
func (c *Client) List(ctx context.Context, k *v3.KindInfo, ns string) ([]v3.Resource, int64, error) {
	kvs, rev, err := c.be.List(ctx, KindPrefix(k, ns))
	if err != nil {
		return nil, 0, fmt.Errorf("listing %s: %w", k.Plural, err)
	}
	out := make([]v3.Resource, 0, len(kvs)+1)
	if k.Kind == v3.KindProfile {
		out = append(out, DefaultAllowProfile())
	}
	for _, kv := range kvs {
		r, err := decode(k, kv)
		if err != nil {
			return nil, 0, err
		}
		if isDefaultAllow(k, r.GetName()) {
			continue // the built-in one wins, as in Calico
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].GetNamespace() != out[j].GetNamespace() {
			return out[i].GetNamespace() < out[j].GetNamespace()
		}
		return out[i].GetName() < out[j].GetName()
	})
	return out, rev, nil
}

// Create writes a new resource; it fails if one with that name exists.
func (c *Client) Create(ctx context.Context, r v3.Resource) (v3.Resource, error) {
	return c.single(ctx, OpCreate, r)
}

// Update replaces an existing resource. With metadata.resourceVersion set it
// is a compare-and-swap on that revision; without, on the revision it reads.
func (c *Client) Update(ctx context.Context, r v3.Resource) (v3.Resource, error) {
	return c.single(ctx, OpReplace, r)
}

// Apply creates the resource or replaces the existing one.
func (c *Client) Apply(ctx context.Context, r v3.Resource) (v3.Resource, error) {
	return c.single(ctx, OpApply, r)
}

// Delete removes a resource; with rev non-zero only if it is still at that
// revision. It returns what was deleted. It goes through Batch, so the
// datastore rules hold (a tier must be empty, the built-in tiers and profile
// stay).
func (c *Client) Delete(ctx context.Context, k *v3.KindInfo, ns, name string, rev int64) (v3.Resource, error) {
	if err := checkNamespace(k, ns); err != nil {
		return nil, err
	}
	r := k.NewObject()
	r.SetName(name)
	if k.Namespaced {
		r.SetNamespace(ns)
	}
	if rev != 0 {
		r.SetResourceVersion(strconv.FormatInt(rev, 10))
	}
	return c.single(ctx, OpDelete, r)
}

func (c *Client) single(ctx context.Context, op Op, r v3.Resource) (v3.Resource, error) {
	res, err := c.Batch(ctx, op, []v3.Resource{r})
	if err != nil {
		var be *BatchError
		if errors.As(err, &be) {
			return nil, be.Err
		}
		var derrs DocErrors
		if errors.As(err, &derrs) && len(derrs) == 1 {
			return nil, derrs[0].Err
		}
		return nil, err
	}
	return res.Objects[0], nil
}

// EnsureInitialized makes the datastore ready as calicoctl does on its first
// write: ClusterInformation "default" with datastoreReady, then the built-in
// tiers. Objects that exist are left alone. Calico's agents refuse to start
// until this is done.
func (c *Client) EnsureInitialized(ctx context.Context) error {
	if c.initialized.Load() {
		return nil
	}
	return c.initialize(ctx, c.isInitialized(ctx))
}

// isInitialized reads whether the datastore has been initialised
// (ClusterInformation "default" exists): nil if so, datastore.ErrNotFound
// if not, or why it could not tell.
func (c *Client) isInitialized(ctx context.Context) error {
	ciKind, _ := v3.KindByKind(v3.KindClusterInformation)
	_, err := c.be.Get(ctx, Key(ciKind, "", "default"))
	return err
}

// initialize is EnsureInitialized after isInitialized said found.
func (c *Client) initialize(ctx context.Context, found error) error {
	if found == nil {
		c.initialized.Store(true)
		return nil
	} else if !errors.Is(found, datastore.ErrNotFound) {
		return fmt.Errorf("checking datastore initialisation: %w", found)
	}
	ciKind, _ := v3.KindByKind(v3.KindClusterInformation)
	guid := make([]byte, 16)
	if _, err := rand.Read(guid); err != nil {
		return err
	}
	ci := ciKind.NewObject().(*v3.ClusterInformation)
	ci.Name = "default"
	ready := true
	ci.Spec.ClusterGUID = hex.EncodeToString(guid)
	ci.Spec.DatastoreReady = &ready
	objs := []v3.Resource{ci}
	tierKind, _ := v3.KindByKind(v3.KindTier)
	for _, bt := range v3.BuiltinTiers {
		t := tierKind.NewObject().(*v3.Tier)
		t.Name = bt.Name
		order, action := bt.Order, bt.DefaultAction
		t.Spec.Order = &order
		t.Spec.DefaultAction = &action
		objs = append(objs, t)
	}
	for _, o := range objs {
		stamp(o, nil, c.now())
		key, val, err := encode(o)
		if err != nil {
			return err
		}
		if _, err := c.be.Create(ctx, key, val); err != nil && !errors.Is(err, datastore.ErrAlreadyExists) {
			return fmt.Errorf("initialising datastore (%s %s): %w", v3.KindOf(o).Kind, o.GetName(), err)
		}
	}
	c.initialized.Store(true)
	return nil
}

func checkNamespace(k *v3.KindInfo, ns string) error {
	if k.Namespaced && ns == "" {
		return fmt.Errorf("%s is namespaced: give a namespace", k.Kind)
	}
	return nil
}

func resourceError(k *v3.KindInfo, ns, name string, err error) error {
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return fmt.Errorf("%s %s not found: %w", k.Kind, nsName(ns, name), datastore.ErrNotFound)
	case errors.Is(err, datastore.ErrAlreadyExists):
		return fmt.Errorf("%s %s already exists: %w", k.Kind, nsName(ns, name), datastore.ErrAlreadyExists)
	case errors.Is(err, datastore.ErrConflict):
		return fmt.Errorf("%s %s was changed by someone else (resourceVersion mismatch); get it again and retry: %w", k.Kind, nsName(ns, name), datastore.ErrConflict)
	}
	return fmt.Errorf("%s %s: %w", k.Kind, nsName(ns, name), err)
}

func nsName(ns, name string) string {
	if ns == "" {
		return fmt.Sprintf("%q", name)
	}
	return fmt.Sprintf("%q in namespace %q", name, ns)
}

func parseRV(r v3.Resource) (int64, error) {
	s := r.GetResourceVersion()
	if s == "" {
		return 0, nil
	}
	rv, err := strconv.ParseInt(s, 10, 64)
	if err != nil || rv <= 0 {
		return 0, &v3.FieldError{Field: "metadata.resourceVersion", Detail: fmt.Sprintf("%q is not a revision", s)}
	}
	return rv, nil
}
