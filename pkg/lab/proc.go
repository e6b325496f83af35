package lab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// run runs a command and returns its combined output, with the command in
// the error.
func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ipn runs `ip -n NS ARGS` (or `ip ARGS` in the root namespace for ns "").
func ipn(ns string, args ...string) error {
	a := []string{"ip"}
	if ns != "" {
		a = append(a, "-n", ns)
	}
	_, err := run(append(a, args...)...)
	return err
}

// sysctl sets sysctls (k=v) in a namespace.
func sysctl(ns string, kv ...string) error {
	_, err := run(append([]string{"ip", "netns", "exec", ns, "sysctl", "-qw"}, kv...)...)
	return err
}

// spawn starts a long-lived process in namespace ns ("" for the root
// namespace) in its own session, so that it outlives the command that
// started it; its output goes to logPath.
func spawn(role, name, ns, logPath string, env []string, argv ...string) (Proc, error) {
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return Proc{}, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Proc{}, fmt.Errorf("starting %s: %w", strings.Join(argv, " "), err)
	}
	// Reap it if it dies while we run (tests call the lab in-process);
	// when this process exits first, init adopts it.
	go cmd.Wait()
	p := Proc{Role: role, Name: name, PID: cmd.Process.Pid, Log: logPath}
	p.Start, _ = procStart(p.PID)
	return p, nil
}

// procStat returns the state letter and start time of a process.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("pid %d: odd stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("pid %d: odd stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], start, err
}

func procStart(pid int) (uint64, error) {
	_, s, err := procStat(pid)
	return s, err
}

// alive reports whether p still runs (and is the process the lab started).
func (p Proc) alive() bool {
	state, start, err := procStat(p.PID)
	return err == nil && state != 'Z' && state != 'X' && (p.Start == 0 || start == p.Start)
}

// stop ends p: SIGTERM, then SIGKILL after grace.
func (p Proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
	for i := 0; i < 100 && p.alive(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// procsInNetns lists the processes whose network namespace is the named
// one (/run/netns/NAME): what still runs inside a lab's namespace when it
// is torn down (a `lab exec` left behind, say).
func procsInNetns(names []string) []Proc {
	inodes := map[uint64]string{}
	for _, n := range names {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/run/netns", n), &st) == nil {
			inodes[st.Ino] = n
		}
	}
	if len(inodes) == 0 {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil {
			continue
		}
		if n, ok := inodes[st.Ino]; ok {
			start, _ := procStart(pid)
			out = append(out, Proc{Role: "stray", Name: n, PID: pid, Start: start})
		}
	}
	return out
}
