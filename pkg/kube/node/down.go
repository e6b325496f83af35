package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Record is what Down needs to stop a node and remove its traces, from
// any process: a caller keeps it (JSON) with the node's processes, saved
// before Setup so that a crash at any point leaves nothing Down misses.
type Record struct {
	Name             string        `json:"name"`
	Dir              string        `json:"dir"`
	CgroupRoot       string        `json:"cgroupRoot"`
	MountNS          string        `json:"mountNS"`
	ContainerdSocket string        `json:"containerdSocket"`
	StopGrace        time.Duration `json:"stopGrace"`
	Procs            []Proc        `json:"procs,omitempty"`
}

// Record is the plan's Record with procs, the processes started so far.
func (p *Plan) Record(procs ...Proc) Record {
	return Record{Name: p.Config.Name, Dir: p.Config.Dir, CgroupRoot: p.Config.CgroupRoot, MountNS: p.MountNS,
		ContainerdSocket: p.ContainerdSocket, StopGrace: p.Config.StopGrace, Procs: procs}
}

// Adopt moves process pid into the node's cgroup root (a child named
// after role) in every cgroup v1 hierarchy. Call it for containerd right
// after starting it, before it starts a shim: shims and so every pod are
// then under the cgroup root, where Down finds them. Kubelet can be
// adopted too.
func (p *Plan) Adopt(role string, pid int) error {
	ms, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		if m.fstype != "cgroup" {
			continue
		}
		dir := filepath.Join(m.point, p.Config.CgroupRoot, role)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			errs = append(errs, err)
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(m.point, p.Config.CgroupRoot, f)); err == nil {
				if cur, _ := os.ReadFile(filepath.Join(dir, f)); strings.TrimSpace(string(cur)) == "" {
					_ = os.WriteFile(filepath.Join(dir, f), b, 0o644)
				}
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", dir, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("node %s: moving %s (%d) into its cgroups: %w", p.Config.Name, role, pid, errors.Join(errs...))
	}
	return nil
}

// Down stops the node of r and removes what it made outside Dir: kubelet
// and kube-proxy get SIGTERM (SIGKILL after the grace), then every
// process under the cgroup root (containerd, shims, pods) and every shim
// of the node's containerd is killed, the mount namespace is released
// (with every mount in it: overlays, volumes, pod namespaces) and the
// cgroups are removed. Dir is left, with the logs. Down of a node that is
// down does nothing; it is safe to repeat after a failure.
func Down(ctx context.Context, r Record) error {
	grace := r.StopGrace
	if grace <= 0 {
		grace = DefaultStopGrace
	}
	var errs []error
	order := []string{"kube-proxy", "kubelet", "containerd"}
	procs := slices.Clone(r.Procs)
	slices.SortStableFunc(procs, func(a, b Proc) int { return slices.Index(order, a.Role) - slices.Index(order, b.Role) })
	for _, p := range procs {
		if p.Role == "containerd" {
			continue // killed with its shims and pods below
		}
		stop(ctx, p, grace)
	}
	if r.CgroupRoot != "" && r.CgroupRoot != "/" {
		if err := killTree(r); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range procs {
		stop(ctx, p, time.Second)
		if p.Alive() {
			errs = append(errs, fmt.Errorf("%s (pid %d) still runs", p.Role, p.PID))
		}
	}
	if r.MountNS != "" {
		if err := unix.Unmount(r.MountNS, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("releasing the mount namespace %s: %w", r.MountNS, err))
		}
		if err := os.Remove(r.MountNS); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if r.CgroupRoot != "" && r.CgroupRoot != "/" {
		if err := removeCgroups(r.CgroupRoot); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("node %s down: %w", r.Name, errors.Join(errs...))
	}
	return nil
}

// TreePIDs are the processes of the node of r, sorted, the caller left
// out: those in the cgroup tree of r.CgroupRoot in every hierarchy
// (CgroupPIDs), and the shims of the node's containerd (r.ContainerdSocket)
// wherever their cgroup is. Down kills them.
func TreePIDs(r Record) ([]int, error) {
	pids, err := CgroupPIDs(r.CgroupRoot, nil)
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	for _, pid := range pids {
		seen[pid] = true
	}
	if r.ContainerdSocket != "" {
		// containerd-shim-runc-v2 -namespace k8s.io -id ID -address SOCKET
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil {
				continue
			}
			args := strings.Split(string(b), "\x00")
			if i := slices.Index(args, "-address"); i >= 0 && i+1 < len(args) && args[i+1] == r.ContainerdSocket {
				seen[pid] = true
			}
		}
	}
	delete(seen, os.Getpid())
	return sortedPIDs(seen), nil
}

// CgroupPIDs are the processes in every cgroup under root (a cgroup path,
// as a node's CgroupRoot) in every hierarchy, sorted. With match set, only
// those in the cgroups under root whose directory name match accepts, and
// in every cgroup under those (kubelet's pod<UID> of one pod).
func CgroupPIDs(root string, match func(name string) bool) ([]int, error) {
	seen := map[int]bool{}
	collect := func(top string) {
		_ = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	ms, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		top := filepath.Join(m.point, root)
		if match == nil {
			collect(top)
			continue
		}
		_ = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if match(d.Name()) {
				collect(path)
				return filepath.SkipDir
			}
			return nil
		})
	}
	return sortedPIDs(seen), nil
}

func sortedPIDs(set map[int]bool) []int {
	pids := make([]int, 0, len(set))
	for pid := range set {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids
}

// killTree SIGKILLs everything TreePIDs finds until nothing is left
// (processes may fork while it runs), at most 30 s.
func killTree(r Record) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		pids, err := TreePIDs(r)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of the node left after SIGKILL: %v", pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes root and every cgroup under it in every
// hierarchy, deepest first, retrying while exiting tasks keep one busy.
func removeCgroups(root string) error {
	ms, err := cgroupMounts()
	if err != nil {
		return err
	}
	var left []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		left = left[:0]
		// Every hierarchy: runc makes the pods' cgroups in the cgroup2
		// one of a hybrid layout too.
		for _, m := range ms {
			var dirs []string
			_ = filepath.WalkDir(filepath.Join(m.point, root), func(path string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
					left = append(left, dirs[i]+": "+err.Error())
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroups left: %s", strings.Join(left, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
