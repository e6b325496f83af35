package kubecontrollers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
)

// writer makes stored objects what the controllers decide, always with
// compare-and-swap: an update or delete is conditional on the revision the
// decision was made from; on a conflict the object is read again and the
// decision made again from what is there now.
type writer struct {
	c       *client.Client
	log     *slog.Logger
	metrics *metrics
	// controller names the writer in logs and metrics.
	controller string
}

// conflictRetries bounds the read-decide-write rounds of one write; a key
// that keeps losing goes back to its queue with backoff.
const conflictRetries = 5

// decideFunc says what the object should be given what is stored now (nil
// when absent): want is written (nil: leave it as it is), or del deletes
// it. why explains the write in the log.
type decideFunc func(cur v3.Resource) (want v3.Resource, del bool, why string)

// apply reads nothing first when cur is given (the cache's copy); it reads
// the store only after a conflict.
func (w *writer) apply(ctx context.Context, k *v3.KindInfo, ns, name string, cur v3.Resource, decide decideFunc) error {
	for attempt := 0; ; attempt++ {
		if attempt == conflictRetries {
			return fmt.Errorf("%s %s: still changing under us after %d attempts", k.Kind, storeKey(ns, name), attempt)
		}
		if attempt > 0 {
			var err error
			if cur, err = w.c.Get(ctx, k, ns, name); errors.Is(err, datastore.ErrNotFound) {
				cur = nil
			} else if err != nil {
				return err
			}
		}
		want, del, why := decide(cur)
		switch {
		case del && cur == nil:
			return nil
		case del:
			rev, _ := strconv.ParseInt(cur.GetResourceVersion(), 10, 64)
			_, err := w.c.Delete(ctx, k, ns, name, rev)
			if retryable(err) {
				continue
			}
			if err != nil {
				return err
			}
			w.wrote(k, ns, name, "delete", why)
			return nil
		case want == nil:
			return nil
		case cur == nil:
			_, err := w.c.Create(ctx, want)
			if retryable(err) {
				continue
			}
			if err != nil {
				return err
			}
			w.wrote(k, ns, name, "create", why)
			return nil
		default:
			diff := Diff(want, cur)
			if len(diff) == 0 {
				return nil
			}
			want.SetResourceVersion(cur.GetResourceVersion())
			_, err := w.c.Update(ctx, want)
			if retryable(err) {
				continue
			}
			if err != nil {
				return err
			}
			w.wrote(k, ns, name, "update", why+" ("+strings.Join(diff, ", ")+" changed)")
			return nil
		}
	}
}

// retryable: the stored object is not what the decision was made from.
func retryable(err error) bool {
	return errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrNotFound) || errors.Is(err, datastore.ErrAlreadyExists)
}

func (w *writer) wrote(k *v3.KindInfo, ns, name, op, why string) {
	args := []any{"controller", w.controller, "kind", k.Kind, "name", name}
	if ns != "" {
		args = append(args, "namespace", ns)
	}
	w.log.Info(op+"d "+k.Kind+" "+storeKey(ns, name)+": "+why, args...)
	if w.metrics != nil {
		w.metrics.writes.WithLabelValues(w.controller, k.Kind, op).Inc()
	}
}
