package mtu

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestForWorkloads(t *testing.T) {
	for _, tc := range []struct {
		name    string
		host    int
		tunnels []int
		want    int
	}{
		{"no tunnel: the host's", 1500, nil, 1500},
		{"tunnels not in use", 9000, []int{0, 0, 0}, 9000},
		{"VXLAN", 1500, []int{1450, 0, 0}, 1450},
		{"VXLAN and WireGuard: the smaller", 1500, []int{1450, 0, 1440}, 1440},
		{"IP-in-IP and VXLAN", 1500, []int{1450, 1480, 0}, 1450},
		{"a tunnel set above the host's MTU still wins", 1500, []int{8950}, 8950},
		{"nothing known", 0, []int{0}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ForWorkloads(tc.host, tc.tunnels...); got != tc.want {
				t.Errorf("ForWorkloads(%d, %v) = %d, want %d", tc.host, tc.tunnels, got, tc.want)
			}
		})
	}
}

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "mtu")
	if _, err := Read(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of a missing file: %v, want not exist", err)
	}
	for _, v := range []int{1440, 1450, 9000} {
		if err := Write(path, v); err != nil {
			t.Fatal(err)
		}
		if got, err := Read(path); err != nil || got != v {
			t.Fatalf("Read after Write(%d) = %d, %v", v, got, err)
		}
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
	for _, bad := range []int{0, 67, 65536} {
		if err := Write(path, bad); err == nil {
			t.Errorf("Write(%d) succeeded", bad)
		}
	}
	if got, _ := Read(path); got != 9000 {
		t.Errorf("a refused Write changed the file: %d", got)
	}
}

func TestReadBad(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"", "abc", "1440 1450", "67", "70000", "-1"} {
		path := filepath.Join(dir, "mtu")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Read(path)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("Read of %q: %v, want an error naming the file", content, err)
		}
	}
	path := filepath.Join(dir, "ok")
	if err := os.WriteFile(path, []byte(" 1440\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, err := Read(path); err != nil || v != 1440 {
		t.Errorf("Read of \" 1440\\n\" = %d, %v", v, err)
	}
}
