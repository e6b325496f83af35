package kubecontrollers

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
)

// store is a cache of one Calico kind as etcd has it, fed by the
// datastore's gapless watch: the etcd side's informer. Controllers read it
// to decide and to find what to reconcile; a write is still a
// compare-and-swap on the revision read here, so a stale cache costs a
// retry, never a lost change.
type store struct {
	kind   *v3.KindInfo
	be     datastore.Backend
	log    *slog.Logger
	prefix string

	mu      sync.RWMutex
	objs    map[string]v3.Resource // by storeKey
	indexes map[string]indexFunc
	index   map[string]map[string]map[string]struct{} // index name -> value -> storeKeys

	synced     chan struct{}
	syncedOnce sync.Once
	handlers   []func(old, cur v3.Resource)
}

type indexFunc func(v3.Resource) []string

func newStore(be datastore.Backend, kind string, log *slog.Logger) *store {
	k, ok := v3.KindByKind(kind)
	if !ok {
		panic("unknown kind " + kind)
	}
	return &store{
		kind: k, be: be, log: log.With("cache", k.Plural), prefix: client.KindPrefix(k, ""),
		objs: map[string]v3.Resource{}, indexes: map[string]indexFunc{},
		index: map[string]map[string]map[string]struct{}{}, synced: make(chan struct{}),
	}
}

// storeKey is "<ns>/<name>" for namespaced kinds, else the name.
func storeKey(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// addIndex and onChange must be called before run.
func (s *store) addIndex(name string, f indexFunc) { s.indexes[name] = f }

// onChange registers a handler called, from the store's goroutine, with
// the old and new object of every change (old nil on add, cur nil on
// delete).
func (s *store) onChange(h func(old, cur v3.Resource)) { s.handlers = append(s.handlers, h) }

// hasSynced reports the first complete list.
func (s *store) hasSynced() bool {
	select {
	case <-s.synced:
		return true
	default:
		return false
	}
}

func (s *store) get(ns, name string) v3.Resource {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.objs[storeKey(ns, name)]
}

func (s *store) list() []v3.Resource {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]v3.Resource, 0, len(s.objs))
	for _, o := range s.objs {
		out = append(out, o)
	}
	return out
}

func (s *store) byIndex(index, value string) []v3.Resource {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []v3.Resource
	for k := range s.index[index][value] {
		out = append(out, s.objs[k])
	}
	return out
}

func (s *store) indexValues(index string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.index[index]))
	for v := range s.index[index] {
		out = append(out, v)
	}
	return out
}

// run watches until ctx is done. A watch that fails for good (it never
// should: the datastore retries inside) is started again from a fresh
// list, and keys the new list lacks are reported deleted.
func (s *store) run(ctx context.Context) {
	for ctx.Err() == nil {
		seen := map[string]bool{}
		listing := true
		for ev := range s.be.Watch(ctx, s.prefix, 0) {
			switch ev.Type {
			case datastore.EventAdded, datastore.EventModified:
				r, err := client.DecodeKV(s.kind, ev.KV)
				if err != nil {
					s.log.Warn("skipping a stored value that does not decode", "key", ev.KV.Key, "error", err)
					continue
				}
				k := storeKey(r.GetNamespace(), r.GetName())
				if listing {
					seen[k] = true
				}
				s.put(k, r)
			case datastore.EventDeleted:
				s.remove(s.keyOf(ev.KV.Key))
			case datastore.EventInSync:
				if listing {
					listing = false
					s.dropUnseen(seen)
					s.syncedOnce.Do(func() { close(s.synced) })
				}
			case datastore.EventError:
				s.log.Warn("watch failed; listing again", "error", ev.Err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// keyOf is the storeKey of an etcd key under the prefix.
func (s *store) keyOf(etcdKey string) string {
	return strings.TrimPrefix(etcdKey, s.prefix)
}

func (s *store) dropUnseen(seen map[string]bool) {
	s.mu.RLock()
	var gone []string
	for k := range s.objs {
		if !seen[k] {
			gone = append(gone, k)
		}
	}
	s.mu.RUnlock()
	for _, k := range gone {
		s.remove(k)
	}
}

func (s *store) put(k string, r v3.Resource) {
	s.mu.Lock()
	old := s.objs[k]
	s.unindex(k, old)
	s.objs[k] = r
	for name, f := range s.indexes {
		for _, v := range f(r) {
			m := s.index[name]
			if m == nil {
				m = map[string]map[string]struct{}{}
				s.index[name] = m
			}
			if m[v] == nil {
				m[v] = map[string]struct{}{}
			}
			m[v][k] = struct{}{}
		}
	}
	s.mu.Unlock()
	for _, h := range s.handlers {
		h(old, r)
	}
}

func (s *store) remove(k string) {
	s.mu.Lock()
	old, ok := s.objs[k]
	if ok {
		s.unindex(k, old)
		delete(s.objs, k)
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	for _, h := range s.handlers {
		h(old, nil)
	}
}

func (s *store) unindex(k string, old v3.Resource) {
	if old == nil {
		return
	}
	for name, f := range s.indexes {
		for _, v := range f(old) {
			if set := s.index[name][v]; set != nil {
				delete(set, k)
				if len(set) == 0 {
					delete(s.index[name], v)
				}
			}
		}
	}
}
