package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Setup makes what the node's processes need outside Dir: the node's
// cgroup root in every cgroup v1 hierarchy, the mount points of Binds on
// the host (empty directories, left in place: other nodes' namespaces may
// use them), and the node's mount namespace pinned at MountNS. It also
// copies CNIPlugins and writes CNIConfig. Setting up a node set up already
// does only what is missing.
func (p *Plan) Setup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, src := range p.Config.CNIPlugins {
		if err := copyFile(src, filepath.Join(p.CNIBinDir, filepath.Base(src))); err != nil {
			return fmt.Errorf("node %s: CNI plugin: %w", p.Config.Name, err)
		}
	}
	if p.Config.CNIConfig != nil {
		if err := p.SetCNIConfig(p.Config.CNIConfig); err != nil {
			return err
		}
	}
	if err := p.makeCgroups(); err != nil {
		return fmt.Errorf("node %s: cgroups: %w", p.Config.Name, err)
	}
	for _, b := range p.Binds {
		if err := os.MkdirAll(b.Target, 0o755); err != nil {
			return fmt.Errorf("node %s: mount point: %w", p.Config.Name, err)
		}
	}
	pinned, err := isMountPoint(p.MountNS)
	if err != nil {
		return err
	}
	if pinned {
		return nil
	}
	if err := p.makeMountNS(); err != nil {
		return fmt.Errorf("node %s: mount namespace: %w", p.Config.Name, err)
	}
	return nil
}

// SetCNIConfig writes conf as the node's only CNI configuration
// (10-tortie.conflist); containerd watches the directory, and the node
// turns Ready once it is there.
func (p *Plan) SetCNIConfig(conf []byte) error {
	return writeFile(filepath.Join(p.CNIConfDir, "10-tortie.conflist"), conf)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// mount is one line of /proc/self/mountinfo.
type mount struct {
	point, fstype, source, superOpts string
}

func mounts() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 5 || len(b) < 3 {
			continue
		}
		out = append(out, mount{point: unescape(a[4]), fstype: b[0], source: b[1], superOpts: b[2]})
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isMountPoint(path string) (bool, error) {
	ms, err := mounts()
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.point == path {
			return true, nil
		}
	}
	return false, nil
}

// cgroupMounts are the cgroup v1 hierarchies, and cgroup2, mounted under
// /sys/fs/cgroup.
func cgroupMounts() ([]mount, error) {
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []mount
	for _, m := range ms {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && strings.HasPrefix(m.point, "/sys/fs/cgroup/") {
			out = append(out, m)
		}
	}
	return out, nil
}

// makeCgroups makes CgroupRoot in every v1 hierarchy; cpuset needs its
// cpus and mems before anything can join it.
func (p *Plan) makeCgroups() error {
	ms, err := cgroupMounts()
	if err != nil {
		return err
	}
	v1 := 0
	for _, m := range ms {
		if m.fstype != "cgroup" {
			continue
		}
		v1++
		dir := filepath.Join(m.point, p.Config.CgroupRoot)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			b, err := os.ReadFile(filepath.Join(m.point, f))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			cur, _ := os.ReadFile(filepath.Join(dir, f))
			if strings.TrimSpace(string(cur)) != "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
			}
		}
	}
	if v1 == 0 {
		return errors.New("no cgroup v1 hierarchy under /sys/fs/cgroup (kubelet here runs on cgroup v1)")
	}
	return nil
}

// makeMountNS makes the node's mount namespace on a thread of its own and
// pins it on MountNS. In it: nothing propagates to or from the host; a
// sysfs of the node's network namespace; a tmpfs on /sys/fs/cgroup with
// the host's hierarchies mounted again (the sysfs hides them); the Binds.
// The thread is never unlocked, so the rest of this process never runs in
// it; once the namespace is pinned the thread goes back to the process's
// mount and network namespaces and ends. Going back matters: Go does not
// end the main thread when the goroutine that locked it returns, it parks
// it for good, and a main thread parked in a node's namespaces would keep
// them alive after Down and make /proc/self show the node's mounts.
func (p *Plan) makeMountNS() error {
	cgs, err := cgroupMounts()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p.MountNS, os.O_CREATE|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	netns, err := os.Open(p.Config.Netns)
	if err != nil {
		return err
	}
	defer netns.Close()
	type ready struct {
		tid int
		err error
	}
	readyc := make(chan ready, 1)
	pinned := make(chan struct{})
	back := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		home, err := openThreadNS()
		if err != nil {
			readyc <- ready{err: err}
			back <- nil // still in them
			return
		}
		defer home.close()
		err = p.enterNewMountNS(int(netns.Fd()), cgs)
		if err == nil {
			readyc <- ready{tid: unix.Gettid()}
			<-pinned
		} else {
			readyc <- ready{err: err}
		}
		back <- home.enter()
	}()
	r := <-readyc
	if r.err != nil {
		os.Remove(p.MountNS)
		if err := <-back; err != nil {
			return errors.Join(r.err, err)
		}
		return r.err
	}
	src := fmt.Sprintf("/proc/%d/task/%d/ns/mnt", os.Getpid(), r.tid)
	err = unix.Mount(src, p.MountNS, "", unix.MS_BIND, "")
	close(pinned)
	if err != nil {
		os.Remove(p.MountNS)
		err = fmt.Errorf("pinning %s on %s: %w", src, p.MountNS, err)
	}
	return errors.Join(err, <-back)
}

// threadNS are a thread's mount and network namespaces, held open.
type threadNS struct{ mnt, net *os.File }

// openThreadNS opens the calling thread's namespaces; call it on a locked
// thread.
func openThreadNS() (threadNS, error) {
	mnt, err := os.Open("/proc/thread-self/ns/mnt")
	if err != nil {
		return threadNS{}, err
	}
	net, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		mnt.Close()
		return threadNS{}, err
	}
	return threadNS{mnt: mnt, net: net}, nil
}

// enter puts the calling thread back in the namespaces of t, those it
// left. Entering a mount namespace needs a thread that shares no
// filesystem information with others, as one that unshared its own.
func (t threadNS) enter() error {
	for _, ns := range []struct {
		f    *os.File
		cur  string
		kind int
		name string
	}{{t.mnt, "/proc/thread-self/ns/mnt", unix.CLONE_NEWNS, "mount"}, {t.net, "/proc/thread-self/ns/net", unix.CLONE_NEWNET, "network"}} {
		same, err := sameFile(ns.f, ns.cur)
		if err != nil {
			return fmt.Errorf("the thread's %s namespace: %w", ns.name, err)
		}
		if same {
			continue
		}
		if err := unix.Setns(int(ns.f.Fd()), ns.kind); err != nil {
			return fmt.Errorf("returning the thread to the process's %s namespace: %w", ns.name, err)
		}
	}
	return nil
}

// sameFile tells whether f and the file at path are one (a namespace).
func sameFile(f *os.File, path string) (bool, error) {
	a, err := f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

func (t threadNS) close() {
	t.mnt.Close()
	t.net.Close()
}

// enterNewMountNS runs on a locked thread: it unshares the mount
// namespace and sets it up.
func (p *Plan) enterNewMountNS(netnsFd int, cgs []mount) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	// sysfs shows the network devices of the namespace of who mounts it.
	if err := unix.Setns(netnsFd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("entering %s: %w", p.Config.Netns, err)
	}
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmounting /sys: %w", err)
	}
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("sysfs", "/sys", "sysfs", flags, ""); err != nil {
		return fmt.Errorf("mounting sysfs: %w", err)
	}
	if err := unix.Mount("tmpfs", "/sys/fs/cgroup", "tmpfs", flags, "mode=755"); err != nil {
		return fmt.Errorf("mounting /sys/fs/cgroup: %w", err)
	}
	for _, m := range cgs {
		if err := os.MkdirAll(m.point, 0o755); err != nil {
			return err
		}
		var opts []string
		for _, o := range strings.Split(m.superOpts, ",") {
			if o != "rw" && o != "ro" {
				opts = append(opts, o)
			}
		}
		if err := unix.Mount(m.source, m.point, m.fstype, flags, strings.Join(opts, ",")); err != nil {
			return fmt.Errorf("mounting %s (%s %s): %w", m.point, m.fstype, m.superOpts, err)
		}
	}
	for _, b := range p.Binds {
		if err := unix.Mount(b.Source, b.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("binding %s on %s: %w", b.Source, b.Target, err)
		}
	}
	return nil
}
