// Package reference reads the facts about Calico in the project's shared
// reference notes, so tests compare against what real Calico wrote instead
// of hand-made copies of it. It reads the in-repo copy of those notes
// (testdata/shared at the repository root, copied unchanged from the shared
// folder; testdata/README.md says how to refresh it), so a clone alone
// passes its tests. For tests only.
package reference

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// ResourcePrefix is where Calico's etcdv3 datastore keeps v3 resources.
const ResourcePrefix = "/calico/resources/v3/projectcalico.org/"

// KeyValue is one etcd key and the value real Calico stored under it.
type KeyValue struct {
	Key, Value string
}

// SharedDir is the in-repo copy of the project's shared folder: the same
// relative paths, so SharedDir()/reference/etcd-layout.md is a copy of
// shared/reference/etcd-layout.md.
func SharedDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "shared")
}

// elided is the mark the notes put where they left part of a value out
// (`"uid":"…"`): such a value is not what Calico stored, byte for byte.
const elided = "\u2026"

// StoredResources returns every v3 resource value observed on real Calico,
// from etcd-layout.md: a key line followed by its JSON value line. Values
// the notes abbreviated (an elided uid or creationTimestamp) are left out:
// they cannot be decoded or compared as stored.
func StoredResources() ([]KeyValue, error) {
	path := filepath.Join(SharedDir(), "reference", "etcd-layout.md")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reference notes missing: %w", err)
	}
	defer f.Close()
	var out []KeyValue
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var key string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ResourcePrefix) && !strings.Contains(line, " "):
			key = line
		case key != "" && strings.HasPrefix(line, "{"):
			if !seen[key] && !strings.Contains(line, elided) {
				out = append(out, KeyValue{key, line})
				seen[key] = true
			}
			key = ""
		default:
			key = ""
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) < 15 {
		return nil, fmt.Errorf("found only %d stored values in %s", len(out), path)
	}
	return out, nil
}
