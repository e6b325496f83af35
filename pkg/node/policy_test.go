package node

import (
	"runtime/debug"
	"testing"
)

// TestHalveGC: the collector's percentage is halved until restored, and
// left alone when the collector is off.
func TestHalveGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	for _, c := range []struct{ gogc, during int }{{100, 50}, {200, 100}, {1, 1}, {-1, -1}} {
		debug.SetGCPercent(c.gogc)
		restore := halveGC()
		during := debug.SetGCPercent(c.gogc) // reads it, then puts it back as it was
		debug.SetGCPercent(during)
		restore()
		after := debug.SetGCPercent(c.gogc)
		if during != c.during || after != c.gogc {
			t.Errorf("GOGC %d: %d while halved, %d after; want %d, %d", c.gogc, during, after, c.during, c.gogc)
		}
	}
}
