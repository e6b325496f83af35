package lab_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/lab"
)

// TestLabUpInterrupted: Ctrl-C (SIGINT to the whole process group, as a
// terminal sends it) or SIGTERM (to tortie alone, as a supervisor sends
// it) at points of `tortie lab up` makes it exit non-zero saying it was
// interrupted, and leaves no namespace, interface, process, state or CLI
// config of the lab behind; the name is free again for `lab up`.
func TestLabUpInterrupted(t *testing.T) {
	testenv.RequireRoot(t)
	bins(t)
	cfgBefore, _ := os.ReadFile(lab.CLIConfigFile)
	var lastName string
	for _, c := range []interruptCase{
		{name: "namespaces-start", after: "creating the namespaces", sig: syscall.SIGINT, to: processGroup},
		{name: "namespaces-midway", after: "creating the namespaces", delay: 40 * time.Millisecond, sig: syscall.SIGINT, to: processGroup},
		{name: "datastore", after: "starting the datastore", sig: syscall.SIGINT, to: processGroup},
		{name: "agents", after: "starting 2 agents", sig: syscall.SIGINT, to: processGroup, made: true},
		{name: "waiting-for-bgp", after: "waiting for 2 agents", sig: syscall.SIGINT, to: processGroup, made: true},
		{name: "sigterm-waiting-for-bgp", after: "waiting for 2 agents", sig: syscall.SIGTERM, to: tortieAlone, made: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			lastName = upInterrupted(t, c, cfgBefore)
		})
	}
	t.Run("same-name-again", func(t *testing.T) {
		// The name of the last interrupted lab is free: up works, down
		// leaves nothing.
		out, errOut, code := tortieStreams(t, "lab", "up", "--name", lastName, "--hosts", "2", "--bin-dir", bins(t))
		t.Cleanup(func() {
			if _, err := os.Stat(lab.Dir(lastName)); err == nil {
				tortie(t, "lab", "down", "--name", lastName)
			}
		})
		if code != 0 || !strings.Contains(out, "lab "+lastName+" is up") {
			t.Fatalf("lab up %s again: exit %d\n%s\n%s", lastName, code, out, errOut)
		}
		mustTortie(t, "lab", "down", "--name", lastName)
		for _, left := range leftovers(t, lastName) {
			t.Errorf("left behind: %s", left)
		}
	})
}

// interruptCase is one signal sent to `tortie lab up` at one point.
type interruptCase struct {
	name string
	// args are added to `lab up --name N --hosts 2 --bin-dir D`.
	args []string
	// after is the start of the progress line to wait for, delay how
	// long to wait after it.
	after string
	delay time.Duration
	sig   syscall.Signal
	to    signalTarget
	// made: the lab had namespaces and processes when signalled.
	made bool
}

// upInterrupted runs `tortie lab up`, signals it as c says, and checks that
// it exits non-zero saying so and leaves nothing of the lab behind (cfgBefore
// is the CLI config before). It returns the lab's name.
func upInterrupted(t *testing.T, c interruptCase, cfgBefore []byte) string {
	name := randName(t)
	t.Cleanup(func() {
		if _, err := os.Stat(lab.Dir(name)); err == nil {
			tortie(t, "lab", "down", "--name", name)
		}
	})
	cmd := exec.Command(filepath.Join(bins(t), "tortie"), "lab", "up", "--name", name, "--hosts", "2", "--bin-dir", bins(t))
	cmd.Args = append(cmd.Args, c.args...)
	cmd.Env = envWithoutEtcd()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only while tortie is not reaped: till then its PID, and so
		// its process group's, cannot be another's (a lab's
		// datastore, in a session of its own, has its PID as its
		// group's).
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		}
	})
	var mu sync.Mutex
	var out strings.Builder
	seen, eof := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(eof)
		sc := bufio.NewScanner(stdout)
		hit := false
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if !hit && strings.HasPrefix(sc.Text(), c.after) {
				hit = true
				close(seen)
			}
		}
	}()
	output := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	select {
	case <-seen:
	case <-eof:
		cmd.Wait()
		t.Fatalf("lab up ended before saying %q:\n%s\n%s", c.after, output(), stderr.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("lab up did not say %q within 90s:\n%s", c.after, output())
	}
	time.Sleep(c.delay)
	madeNetns, madeProcs := recorded(name)
	pid := cmd.Process.Pid
	if c.to == processGroup {
		pid = -pid
	}
	if err := syscall.Kill(pid, c.sig); err != nil {
		t.Fatal(err)
	}
	t.Logf("signalled %v to %s after %q: the state recorded %d namespaces, %d processes", c.sig, c.to, c.after, madeNetns, madeProcs)
	if c.made && (madeNetns == 0 || madeProcs == 0) {
		t.Errorf("the lab had made %d namespaces and %d processes when signalled: the case tests less than it says", madeNetns, madeProcs)
	}
	select {
	case <-eof:
	case <-time.After(2 * time.Minute):
		t.Fatalf("lab up still writes 2 minutes after %v:\n%s", c.sig, output())
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
		t.Fatalf("lab up after %v: %v, want a non-zero exit\nstdout:\n%s\nstderr:\n%s", c.sig, err, output(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted") || !strings.Contains(stderr.String(), "everything it had made is removed") {
		t.Errorf("lab up's error does not say it was interrupted and cleaned up: %q", stderr.String())
	}
	t.Logf("lab up: exit %d: %s", ee.ExitCode(), strings.TrimSpace(stderr.String()))
	for _, left := range leftovers(t, name) {
		t.Errorf("left behind: %s", left)
	}
	if b, _ := os.ReadFile(lab.CLIConfigFile); string(b) != string(cfgBefore) {
		t.Errorf("%s changed:\nbefore: %q\nafter: %q", lab.CLIConfigFile, cfgBefore, b)
	}
	// Nothing for lab down to do.
	if _, errOut, code := tortieStreams(t, "lab", "down", "--name", name); code == 0 || !strings.Contains(errOut, "no such lab") {
		t.Errorf("lab down after the interrupted up: exit %d, %q; want \"no such lab\"", code, errOut)
	}
	return name
}

// signalTarget is who a test's signal goes to.
type signalTarget string

const (
	// processGroup: tortie's whole process group, as a terminal's Ctrl-C
	// (the `ip` commands lab up runs get it too).
	processGroup signalTarget = "the process group"
	// tortieAlone: tortie only, as a supervisor's SIGTERM.
	tortieAlone signalTarget = "tortie alone"
)

// recorded counts the namespaces and processes a lab's state file records
// (0, 0 without one).
func recorded(name string) (netns, procs int) {
	b, err := os.ReadFile(filepath.Join(lab.Dir(name), "state.json"))
	if err != nil {
		return 0, 0
	}
	var st lab.State
	if json.Unmarshal(b, &st) != nil {
		return 0, 0
	}
	return len(st.Netns), len(st.Procs)
}

// leftovers lists what is on the machine of lab name: namespaces,
// interfaces in the root namespace and processes named from it, its
// directory and its state.
func leftovers(t *testing.T, name string) []string {
	t.Helper()
	var left []string
	for _, n := range lines(t, "ip", "netns", "list") {
		if strings.HasPrefix(n, name+"-") {
			left = append(left, "namespace "+n)
		}
	}
	for _, l := range rootLinks(t) {
		if strings.Contains(l, name) {
			left = append(left, "interface "+l)
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || e.Name() == "self" || e.Name() == "thread-self" {
			continue
		}
		if c := strings.ReplaceAll(string(cmdline), "\x00", " "); strings.Contains(c, name) || strings.Contains(c, lab.Dir(name)) {
			left = append(left, "process "+e.Name()+": "+c)
		}
	}
	if _, err := os.Stat(lab.Dir(name)); err == nil {
		left = append(left, "directory "+lab.Dir(name))
	}
	if names, _ := lab.Names(); strings.Contains(" "+strings.Join(names, " ")+" ", " "+name+" ") {
		left = append(left, "a lab in `lab list`")
	}
	return left
}
