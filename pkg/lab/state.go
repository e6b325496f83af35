package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"syscall"
	"time"
)

// RunDir holds one directory per lab: its state file, logs, the
// datastore's data, the CNI_PATH. It is a tmpfs: a reboot forgets every
// lab, as it forgets the namespaces.
var RunDir = "/run/tortie/lab"

// CLIConfigFile is where the CLI looks for its datastore by default (see
// pkg/cli); the lab writes it so that `tortie apply` reaches the lab.
var CLIConfigFile = "/etc/tortie/tortie.cfg"

// Phases of a lab.
const (
	PhaseCreating = "creating" // Up has not finished (or crashed): Down cleans, Up refuses
	PhaseUp       = "up"
)

// State is everything one lab made, written before it is made.
type State struct {
	Name    string    `json:"name"`
	Phase   string    `json:"phase"`
	Created time.Time `json:"created"`
	Options Options   `json:"options"`
	// Octet is R of the underlay subnets 198.18.R.0/24 and 198.19.R.0/24.
	Octet    int    `json:"octet"`
	Endpoint string `json:"endpoint,omitempty"` // the datastore's client URL
	// RootLink is the lab's one interface in the root namespace.
	RootLink string `json:"rootLink,omitempty"`
	// Netns are the namespaces made, in order of creation.
	Netns     []string    `json:"netns"`
	Procs     []Proc      `json:"procs"`
	Hosts     []Host      `json:"hosts"`
	Workloads []*Workload `json:"workloads"`
	// Config is what the lab did to the CLI's config file.
	Config *ConfigBackup `json:"config,omitempty"`
	// Dirs are directories outside RunDir the lab created (removed when empty).
	Dirs []string `json:"dirs,omitempty"`
	// Kube is the lab's Kubernetes API (--kube-api), recorded before it starts.
	Kube *KubeState `json:"kube,omitempty"`
}

// Proc is a process the lab started.
type Proc struct {
	Role  string `json:"role"` // datastore, agent, bird, server, kube-apiserver, kube-controllers
	Name  string `json:"name"` // host or workload it belongs to
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // /proc/PID/stat starttime: a reused PID is not ours
	Log   string `json:"log"`
	// wait is set in the process that started it: its end, exactly.
	wait *procWait
}

// Host is one host namespace.
type Host struct {
	Name   string `json:"name"` // short: h1
	Node   string `json:"node"` // Node name and namespace: NAME-h1
	Netns  string `json:"netns"`
	Addr   string `json:"addr"`
	Addr6  string `json:"addr6,omitempty"`
	Subnet int    `json:"subnet"`
	Port   string `json:"port"` // its port on the fabric bridge (link flap)
	AS     uint32 `json:"as,omitempty"`
}

// Workload is one workload namespace.
type Workload struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Host        string            `json:"host"`
	Netns       string            `json:"netns"`
	ContainerID string            `json:"containerID"`
	Interface   string            `json:"interface,omitempty"`
	IPs         []string          `json:"ips,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Listen      []string          `json:"listen,omitempty"`
	// RequestedIP is what the CNI plugin was asked for (CNI_ARGS IP).
	RequestedIP string `json:"requestedIP,omitempty"`
	// Pod: the workload's Kubernetes Pod was (or was being) created
	// (--kube-api labs).
	Pod bool `json:"pod,omitempty"`
}

// ID is how workloads are named on the command line: NAMESPACE/NAME.
func (w *Workload) ID() string { return w.Namespace + "/" + w.Name }

// ConfigBackup records what was at CLIConfigFile before the lab wrote it.
type ConfigBackup struct {
	Path     string `json:"path"`
	Existed  bool   `json:"existed"`
	Previous string `json:"previous,omitempty"` // another lab's config, restored on down
	Written  string `json:"written"`
	// MadeDir: the file's directory did not exist before a lab wrote it.
	MadeDir bool `json:"madeDir,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// ValidName checks a lab name: it prefixes namespaces and interface names.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: want 1-32 characters of a-z, 0-9 and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// Dir is the lab's directory under RunDir.
func Dir(name string) string { return filepath.Join(RunDir, name) }

func statePath(name string) string { return filepath.Join(Dir(name), "state.json") }

// ErrNoLab is returned for a lab that has no state.
var ErrNoLab = errors.New("no such lab")

// loadState reads a lab's state.
func loadState(name string) (*State, error) {
	b, err := os.ReadFile(statePath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab %q: %w (see `tortie lab list`)", name, ErrNoLab)
	}
	if err != nil {
		return nil, err
	}
	st := &State{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("lab %q: state file %s: %w", name, statePath(name), err)
	}
	return st, nil
}

// save writes the state atomically.
func (st *State) save() error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(st.Name) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(st.Name))
}

// Names lists the labs that have a state file.
func Names() ([]string, error) {
	ents, err := os.ReadDir(RunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			if _, err := os.Stat(statePath(e.Name())); err == nil {
				out = append(out, e.Name())
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// lockFile takes an exclusive flock on path (created if needed), waiting
// while another command holds it, until ctx ends; the returned function
// releases it.
//
// The file locked must still be the one at path once the lock is held: a
// lab's teardown removes its lock file, and the last lab's removes the
// allocation lock, while others may be waiting on them. A waiter that got
// a removed file would hold a lock nobody else can see, so it opens the
// path again.
func lockFile(ctx context.Context, path string) (func(), error) {
	for {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := flockWait(ctx, f, path); err != nil {
			f.Close()
			return nil, err
		}
		held, herr := f.Stat()
		cur, cerr := os.Stat(path)
		if herr == nil && cerr == nil && os.SameFile(held, cur) {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
}

// flockWait takes an exclusive flock on f, polling until ctx ends.
func flockWait(ctx context.Context, f *os.File, path string) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return fmt.Errorf("waiting for %s (another tortie lab command holds it): %w", path, interrupted(ctx))
		}
	}
}

// lockLab serializes the commands that change one lab.
func lockLab(ctx context.Context, name string) (func(), error) {
	return lockFile(ctx, filepath.Join(Dir(name), "lock"))
}

// lockAlloc serializes the choice of underlay subnets between labs.
func lockAlloc(ctx context.Context) (func(), error) {
	return lockFile(ctx, filepath.Join(RunDir, ".alloc.lock"))
}
