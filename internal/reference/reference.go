// Package reference reads the facts about Calico in the shared reference
// notes (../shared/reference beside the checkout), so tests compare against
// what real Calico wrote instead of copies of it.
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

// SharedDir is the shared folder that sits beside the repository.
func SharedDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "shared")
}

// StoredResources returns every v3 resource value observed on real Calico,
// from etcd-layout.md: a key line followed by its JSON value line.
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
			if !seen[key] {
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
