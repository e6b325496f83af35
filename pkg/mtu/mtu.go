// Package mtu is the workload MTU file, as Calico's /var/lib/calico/mtu:
// tortie-node writes the MTU new workloads' interfaces should have (the
// smallest MTU of the tunnels the node uses, else the host's), and the CNI
// plugin reads it when its config sets no "mtu". It imports nothing heavy,
// so the plugin links no node code.
package mtu

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultFile is where tortie-node writes the workload MTU when not told
// otherwise, and where the plugin looks for it.
const DefaultFile = "/var/lib/tortie/mtu"

// Min and Max bound an interface MTU (IPv4's minimum; the largest a
// netlink MTU attribute of Linux's devices takes here).
const (
	Min = 68
	Max = 65535
)

// ForWorkloads is the MTU for new workloads' interfaces: the smallest of
// the MTUs of the tunnels in use (0 for a tunnel not in use), so that no
// packet from a workload has to be fragmented into any of them; with no
// tunnel in use, the host's MTU. 0 when nothing is known.
func ForWorkloads(host int, tunnels ...int) int {
	least := 0
	for _, t := range tunnels {
		if t > 0 && (least == 0 || t < least) {
			least = t
		}
	}
	if least > 0 {
		return least
	}
	return host
}

// Write puts mtu in path (a decimal number and a newline), through a
// temporary file renamed into place, so a reader never sees half a file.
func Write(path string, mtu int) error {
	if mtu < Min || mtu > Max {
		return fmt.Errorf("workload MTU file %s: %d is out of range (%d-%d)", path, mtu, Min, Max)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("workload MTU file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(mtu)+"\n"), 0o644); err != nil {
		return fmt.Errorf("workload MTU file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("workload MTU file: %w", err)
	}
	return nil
}

// Read is the MTU in path. A missing file is an error for which
// errors.Is(err, fs.ErrNotExist) holds; anything but one number in range
// is an error naming the file and what it holds.
func Read(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	v, err := strconv.Atoi(s)
	if err != nil || v < Min || v > Max {
		return 0, fmt.Errorf("workload MTU file %s holds %q, want one MTU from %d to %d", path, s, Min, Max)
	}
	return v, nil
}
