package node

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tortie/tortie/internal/testenv"
)

// TestMountNSLeavesNoThreadBehind makes many nodes' mount namespaces at
// once, so that Go runs some of the goroutines that make them on the main
// thread, which it parks rather than ends. Every thread of the process
// must be back in the process's mount and network namespaces afterwards:
// one left in a node's would keep the node's mounts alive after Down and
// show them in /proc/self/mountinfo.
func TestMountNSLeavesNoThreadBehind(t *testing.T) {
	testenv.RequireRoot(t)
	// Not testenv.NewNS: it makes the namespace on a locked thread too,
	// and may be the one to park the main thread.
	nsName := fmt.Sprintf("tmntns%d", time.Now().UnixNano()%1e9)
	testenv.Sh(t, "ip", "netns", "add", nsName)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", nsName).Run() })
	runtime.LockOSThread()
	want := map[string]string{}
	for _, kind := range []string{"mnt", "net"} {
		l, err := os.Readlink("/proc/thread-self/ns/" + kind)
		if err != nil {
			t.Fatal(err)
		}
		want[kind] = l
	}
	runtime.UnlockOSThread()

	const n = 24
	plans := make([]*Plan, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range plans {
		dir := t.TempDir()
		p := &Plan{Config: Config{Name: fmt.Sprintf("mntns%d", i), Dir: dir, Netns: "/run/netns/" + nsName}, MountNS: filepath.Join(dir, "mntns")}
		plans[i] = p
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Blocked a moment (Setup does I/O first), a goroutine
			// resumes on any thread, the main one too.
			time.Sleep(time.Millisecond)
			errs[i] = p.makeMountNS()
		}()
	}
	wg.Wait()
	for _, p := range plans {
		t.Cleanup(func() { _ = unix.Unmount(p.MountNS, unix.MNT_DETACH) })
	}
	for i, p := range plans {
		if errs[i] != nil {
			t.Fatalf("%s: %v", p.Config.Name, errs[i])
		}
		if ok, err := isMountPoint(p.MountNS); err != nil || !ok {
			t.Fatalf("%s: not pinned on %s (%v)", p.Config.Name, p.MountNS, err)
		}
	}

	// The threads that made the namespaces end (or, the main thread,
	// park) a moment after makeMountNS returns.
	var stray []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		stray = stray[:0]
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			for kind, w := range want {
				l, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns", kind))
				if err == nil && l != w {
					stray = append(stray, fmt.Sprintf("thread %s in %s (the process's: %s)", task.Name(), l, w))
				}
			}
		}
		if len(stray) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(stray) > 0 {
		t.Errorf("threads left in a node's namespaces:\n%s", strings.Join(stray, "\n"))
	}
}
