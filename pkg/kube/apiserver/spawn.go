package apiserver

import (
	"os/exec"
	"runtime"
	"sync"
)

// A child started with a parent-death signal gets it when the *thread*
// that started it exits, not the process. Go ends a thread when a
// goroutine that locked it returns without unlocking, which tortie's
// network-namespace code does on purpose; a server forked from such a
// thread would be killed under a running test. So children are forked from
// one goroutine that holds its thread for the life of the process.
var (
	spawnOnce sync.Once
	spawnReqs chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// startOnSpawnThread runs cmd.Start on the spawning thread.
func startOnSpawnThread(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawnReqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	r := spawnReq{cmd: cmd, done: make(chan error, 1)}
	spawnReqs <- r
	return <-r.done
}
