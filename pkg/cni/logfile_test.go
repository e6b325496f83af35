package cni

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// DirSizes lists a directory: name -> size (for the tests of package
// cni_test too).
func DirSizes(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range entries {
		fi, _ := e.Info()
		out[e.Name()] = fi.Size()
	}
	return out
}

func linesOf(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// TestRotatingFile: the file is rotated before a record would take it past
// the size, to <name>-<UTC time>.<ext> as lumberjack (Calico's) names it;
// the newest maxCount backups are kept, older ones and those past maxAge
// are removed, other files are left alone; no record is lost or split.
func TestRotatingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cni.log")
	clock := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	// Not backups of cni.log: left alone, however old.
	for _, n := range []string{"cni.log.1", "other-2020-01-01T00-00-00.000.log", "cni-notatime.log"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x\n"), 0o644)
	}
	// Calico's backups from before: one within maxAge (counted), one past it.
	os.WriteFile(filepath.Join(dir, "cni-2026-12-05T09-00-00.000.log"), []byte("calico 1h ago\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "cni-2026-11-01T00-00-00.000.log"), []byte("calico 34d ago\n"), 0o644)

	r, err := openRotating(path, 1000, 30*24*time.Hour, 3)
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	var written []string
	for i := range 50 {
		line := fmt.Sprintf("record %02d %s\n", i, strings.Repeat("x", 88)) // 100 bytes
		if n, err := r.Write([]byte(line)); err != nil || n != len(line) {
			t.Fatalf("write %d: %d %v", i, n, err)
		}
		written = append(written, strings.TrimSuffix(line, "\n"))
	}
	r.Close()

	files := DirSizes(t, dir)
	var backups []string
	for n, size := range files {
		if size > 1000 {
			t.Errorf("%s: %d bytes, past the limit of 1000", n, size)
		}
		if strings.HasPrefix(n, "cni-2026-12-05T10-") && strings.HasSuffix(n, ".log") {
			if _, err := time.Parse(backupTimeLayout, strings.TrimSuffix(strings.TrimPrefix(n, "cni-"), ".log")); err != nil {
				t.Errorf("backup %s: %v", n, err)
			}
			backups = append(backups, n)
		}
	}
	slices.Sort(backups)
	for _, n := range []string{"cni.log", "cni.log.1", "other-2020-01-01T00-00-00.000.log", "cni-notatime.log"} {
		if _, ok := files[n]; !ok {
			t.Errorf("%s is gone", n)
		}
	}
	for _, n := range []string{"cni-2026-12-05T09-00-00.000.log", "cni-2026-11-01T00-00-00.000.log"} {
		if _, ok := files[n]; ok {
			t.Errorf("%s kept: past maxCount (the 3 newest are this run's) or maxAge", n)
		}
	}
	if len(backups) != 3 {
		t.Fatalf("backups %v, want the 3 newest", backups)
	}
	// The kept files hold the last records, whole and in order.
	var got []string
	for _, n := range append(backups, "cni.log") {
		got = append(got, linesOf(t, filepath.Join(dir, n))...)
	}
	if want := written[len(written)-len(got):]; !slices.Equal(got, want) || len(got) < 30 {
		t.Errorf("kept records:\n%v\nwant the last %d written:\n%v", got, len(got), want)
	}

	// Age alone: a backup past maxAge goes at the next rotation even when
	// the count allows it.
	r, _ = openRotating(path, 1000, time.Hour, 100)
	r.now = func() time.Time { return clock.Add(2 * time.Hour) }
	r.Write([]byte(strings.Repeat("y", 999) + "\n"))
	r.Close()
	left := 0
	for n := range DirSizes(t, dir) {
		if strings.HasPrefix(n, "cni-2026-12-05T10-") {
			left++
		}
	}
	if left != 0 {
		t.Errorf("%d backups past maxAge kept", left)
	}
}

// TestRotatingFileConcurrent: writers with their own open file (as plugin
// processes have) rotate one path at once: every record lands whole in
// exactly one file, no file grows past the limit by more than the records
// in flight, and no rotation is done twice (no nearly empty backups).
func TestRotatingFileConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cni.log")
	const writers, records, limit = 8, 400, 4096
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := openRotating(path, limit, time.Hour, 1000)
			if err != nil {
				t.Error(err)
				return
			}
			defer r.Close()
			for i := range records {
				r.Write([]byte(fmt.Sprintf("writer %d record %03d %s\n", w, i, strings.Repeat("z", 40))))
			}
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	const lineLen = 66
	small := 0
	for n, size := range DirSizes(t, dir) {
		if size > limit+writers*lineLen {
			t.Errorf("%s: %d bytes", n, size)
		}
		if n != "cni.log" && size < limit/2 {
			small++
		}
		for _, l := range linesOf(t, filepath.Join(dir, n)) {
			var w, i int
			var pad string
			if k, err := fmt.Sscanf(l, "writer %d record %d %s", &w, &i, &pad); k != 3 || err != nil || len(pad) != 40 {
				t.Errorf("%s: broken record %q", n, l)
			}
			seen[l]++
		}
	}
	if len(seen) != writers*records {
		t.Errorf("%d distinct records, want %d", len(seen), writers*records)
	}
	for l, n := range seen {
		if n != 1 {
			t.Errorf("%q written %d times", l, n)
		}
	}
	if small > 0 {
		t.Errorf("%d backups under half the limit: a rotation was repeated", small)
	}
}

func TestLogLevel(t *testing.T) {
	for in, want := range map[string]string{"": "INFO", "info": "INFO", "DEBUG": "DEBUG", "Warning": "WARN", "error": "ERROR", "fatal": "ERROR"} {
		if l, ok := logLevel(in); !ok || l.String() != want {
			t.Errorf("log_level %q: %v %v, want %s", in, l, ok, want)
		}
	}
	if _, ok := logLevel("chatty"); ok {
		t.Error("an unknown log_level is known")
	}
}
