package procfs

import (
	"os"
	"os/exec"
	"testing"
)

func TestStat(t *testing.T) {
	state, start, err := Stat(os.Getpid())
	if err != nil || start == 0 || state == 'Z' {
		t.Fatalf("this process: state %q start %d err %v", state, start, err)
	}
	if _, _, err := Stat(-1); err == nil {
		t.Error("pid -1: no error")
	}
	// A child that exited and is not reaped yet is a zombie.
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	for range 200 {
		if s, _, err := Stat(cmd.Process.Pid); err == nil && s == 'Z' {
			return
		}
		exec.Command("sleep", "0.01").Run()
	}
	t.Errorf("an exited, unreaped child never showed as a zombie")
}
