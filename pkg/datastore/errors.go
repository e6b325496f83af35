package datastore

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors. Returned errors wrap them together with the key, so test
// with errors.Is.
var (
	ErrNotFound      = errors.New("datastore: key not found")
	ErrAlreadyExists = errors.New("datastore: key already exists")
	// ErrConflict: the key's revision is not the one the write was based on.
	ErrConflict = errors.New("datastore: revision conflict")
	// ErrTooManyOps: the transaction has more operations, or more bytes, than
	// the server accepts (--max-txn-ops, --max-request-bytes) or the client
	// may send. The caller splits it.
	ErrTooManyOps = errors.New("datastore: transaction too large")
	// ErrUnavailable: the datastore stayed unreachable or leaderless for
	// longer than the retry budget (Config.RetryTimeout). A write that
	// fails so (or because its context ended) may or may not have been
	// applied; read before deciding.
	ErrUnavailable = errors.New("datastore: unavailable")
)

// TxnError reports which operation's condition made a transaction fail.
// Err wraps ErrAlreadyExists, ErrConflict or ErrNotFound.
type TxnError struct {
	Index int // index into the ops given to Txn
	Key   string
	Err   error
}

func (e *TxnError) Error() string {
	return fmt.Sprintf("datastore: txn op %d on %s: %v", e.Index, e.Key, e.Err)
}

func (e *TxnError) Unwrap() error { return e.Err }

// translate maps etcd client errors to this package's sentinels where one
// applies; other errors are returned unchanged.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%w: %v", ErrTooManyOps, err)
	case errors.Is(err, rpctypes.ErrTooManyRequests):
		return err
	}
	// gRPC's own message size limits (client send or server receive).
	if s, ok := status.FromError(err); ok && s.Code() == codes.ResourceExhausted {
		return fmt.Errorf("%w: %v", ErrTooManyOps, err)
	}
	return err
}

// transient reports whether err is worth retrying: the cluster is electing a
// leader, a member went away, or the attempt timed out while the caller's own
// context is still live. Such a failure says nothing about whether a write
// was applied.
func transient(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	if errors.Is(err, rpctypes.ErrTooManyRequests) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true // our per-attempt timeout, since ctx itself is live
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	// clientv3 converts server errors to rpctypes.EtcdError, which carries
	// the gRPC code separately.
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) && ee.Code() == codes.Unavailable {
		return true
	}
	return false
}
