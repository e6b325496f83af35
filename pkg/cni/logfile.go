package cni

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The log file's rotation, as Calico's plugin rotates its log_file_path
// (with lumberjack, which the plugin does not link: it would add package
// inits to every call for a few lines of logging): once a record would take
// the file past the size limit, the file is renamed beside itself to
// <name>-<UTC time>.<ext> (cni.log -> cni-2026-12-05T13-00-29.734.log, the
// names lumberjack gives, so Calico's earlier backups are counted too), a
// new one is started, and the backups beyond the count or older than the
// age are removed.
//
// Many plugin processes write the file at once (a runtime starts one per
// container): each record is one append (O_APPEND), and a rotation is done
// under an exclusive flock of the file being rotated; a process that finds,
// once it holds the lock, that the path already names another file knows
// another process rotated and just reopens. A process still holding the
// renamed file may finish its few lines there: no line is lost, and a
// backup may end a record or two past the limit.

const (
	// DefaultLogFileMaxSize is the size in MB past which the log file is
	// rotated (Calico's log_file_max_size default).
	DefaultLogFileMaxSize = 100
	// DefaultLogFileMaxAge is the age in days past which a rotated log file
	// is removed (log_file_max_age).
	DefaultLogFileMaxAge = 30
	// DefaultLogFileMaxCount is how many rotated log files are kept
	// (log_file_max_count).
	DefaultLogFileMaxCount = 10

	backupTimeLayout = "2006-01-02T15-04-05.000"
)

// rotatingFile is a log file rotated by size.
type rotatingFile struct {
	path     string
	maxSize  int64
	maxAge   time.Duration
	maxCount int
	now      func() time.Time

	mu sync.Mutex
	f  *os.File
}

func openRotating(path string, maxSize int64, maxAge time.Duration, maxCount int) (*rotatingFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	r := &rotatingFile{path: path, maxSize: maxSize, maxAge: maxAge, maxCount: maxCount, now: time.Now}
	f, err := r.open()
	if err != nil {
		return nil, err
	}
	r.f = f
	return r, nil
}

func (r *rotatingFile) open() (*os.File, error) {
	return os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// Write appends one record, rotating first if it would take the file past
// the limit. A failed rotation leaves the record in the current file.
func (r *rotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, os.ErrClosed
	}
	// The size on disk, not a count of our own writes: other processes
	// append too.
	if fi, err := r.f.Stat(); err == nil && fi.Size() > 0 && fi.Size()+int64(len(p)) > r.maxSize {
		_ = r.rotate(int64(len(p)))
	}
	return r.f.Write(p)
}

// rotate renames the file and starts a new one, unless another process did
// it already; then it removes the backups beyond the count and age.
func (r *rotatingFile) rotate(next int64) error {
	old := r.f
	f, err := r.rotateLocked(old, next)
	if err != nil || f == nil {
		return err
	}
	r.f = f
	old.Close()
	r.prune()
	return nil
}

// rotateLocked does the renaming under the lock of the file being rotated
// and opens what the path names then; nil when no rotation is needed after
// all.
func (r *rotatingFile) rotateLocked(old *os.File, next int64) (*os.File, error) {
	fd := int(old.Fd())
	if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
		return nil, err
	}
	defer syscall.Flock(fd, syscall.LOCK_UN)
	oldInfo, err := old.Stat()
	if err != nil {
		return nil, err
	}
	cur, err := os.Stat(r.path)
	switch {
	case err == nil && !os.SameFile(oldInfo, cur), errors.Is(err, os.ErrNotExist):
		// Rotated (or removed) by someone else: write to what the path
		// names now.
	case err != nil:
		return nil, err
	case oldInfo.Size()+next <= r.maxSize:
		return nil, nil
	default:
		if err := os.Rename(r.path, r.backupName()); err != nil {
			return nil, err
		}
	}
	return r.open()
}

// backupName is a free name for a backup made now.
func (r *rotatingFile) backupName() string {
	dir, prefix, ext := r.nameParts()
	t := r.now().UTC()
	for {
		p := filepath.Join(dir, prefix+t.Format(backupTimeLayout)+ext)
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			return p
		}
		t = t.Add(time.Millisecond)
	}
}

// nameParts splits /dir/cni.log into /dir, "cni-" and ".log".
func (r *rotatingFile) nameParts() (dir, prefix, ext string) {
	base := filepath.Base(r.path)
	ext = filepath.Ext(base)
	return filepath.Dir(r.path), strings.TrimSuffix(base, ext) + "-", ext
}

// prune removes the backups beyond maxCount (the newest are kept) and those
// older than maxAge, by the time in their names. Other files are left
// alone.
func (r *rotatingFile) prune() {
	dir, prefix, ext := r.nameParts()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type backup struct {
		name string
		t    time.Time
	}
	var backups []backup
	for _, e := range entries {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, ext) || len(n) < len(prefix)+len(ext) {
			continue
		}
		t, err := time.Parse(backupTimeLayout, n[len(prefix):len(n)-len(ext)])
		if err != nil {
			continue
		}
		backups = append(backups, backup{n, t})
	}
	slices.SortFunc(backups, func(a, b backup) int { return b.t.Compare(a.t) })
	cutoff := r.now().Add(-r.maxAge)
	for i, b := range backups {
		if i >= r.maxCount || b.t.Before(cutoff) {
			os.Remove(filepath.Join(dir, b.name))
		}
	}
}

// Close closes the file.
func (r *rotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
