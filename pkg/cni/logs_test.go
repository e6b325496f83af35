package cni_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tortie/tortie/pkg/cni"
)

// TestLogFile runs the plugin by hand with Calico's log keys: the log file
// is rotated once it is past log_file_max_size MB (renamed as Calico's
// lumberjack names it), backups past log_file_max_count or older than
// log_file_max_age days go, and stdout holds only the result or the error
// while stderr stays empty unless something fails, or the log file cannot
// be opened.
func TestLogFile(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "cni.log")
	junk := bytes.Repeat([]byte("a line from before the rotation\n"), (1<<20)/32+1) // just past 1 MiB
	if err := os.WriteFile(logPath, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	backup := func(age time.Duration) string {
		return "cni-" + now.Add(-age).Format("2006-01-02T15-04-05.000") + ".log"
	}
	for _, age := range []time.Duration{time.Hour, 2 * time.Hour, 40 * 24 * time.Hour} {
		os.WriteFile(filepath.Join(dir, backup(age)), []byte("old\n"), 0o644)
	}
	conf := func(mod func(p map[string]any)) []byte {
		return e.pluginConf("logs", "1.0.0", func(p map[string]any) {
			p["log_file_path"] = logPath
			p["log_level"] = "debug"
			p["log_file_max_size"] = 1
			p["log_file_max_count"] = 2
			p["log_file_max_age"] = 30
			if mod != nil {
				mod(p)
			}
		})
	}
	netns := e.workloadNS()
	vars := containerVars("logs-1", netns, "eth0", "")

	add := e.exec(cni.PluginType, "ADD", conf(nil), vars...)
	add.ok(t, "ADD")
	if len(add.stderr) > 0 {
		t.Errorf("ADD wrote to stderr:\n%s", add.stderr)
	}
	var res map[string]any
	if err := json.Unmarshal(add.stdout, &res); err != nil || res["cniVersion"] != "1.0.0" {
		t.Errorf("stdout is not the result alone (%v):\n%s", err, add.stdout)
	}

	files := cni.DirSizes(t, dir)
	var rotated []string
	for n, size := range files {
		if strings.HasPrefix(n, "cni-") && size == int64(len(junk)) {
			rotated = append(rotated, n)
		}
	}
	if len(rotated) != 1 || rotated[0] <= backup(time.Hour) {
		t.Errorf("files %v: want one backup, newer than the others, holding the %d bytes from before", files, len(junk))
	}
	if _, ok := files[backup(time.Hour)]; !ok {
		t.Errorf("the newest old backup is gone (count 2 keeps it): %v", files)
	}
	for _, age := range []time.Duration{2 * time.Hour, 40 * 24 * time.Hour} {
		if _, ok := files[backup(age)]; ok {
			t.Errorf("%s kept (log_file_max_count 2, log_file_max_age 30): %v", backup(age), files)
		}
	}
	if len(files) != 3 {
		t.Errorf("files %v: want cni.log and two backups", files)
	}
	if b, _ := os.ReadFile(logPath); !bytes.Contains(b, []byte("level=DEBUG")) || !bytes.Contains(b, []byte("cmd=ADD")) || bytes.Contains(b, []byte("from before")) {
		t.Errorf("the new log file:\n%s", b)
	}

	// A failure: the error object alone on stdout, and the error on stderr
	// and in the file.
	bad := e.exec(cni.PluginType, "ADD", conf(func(p map[string]any) {
		p["ipam"] = map[string]any{"type": cni.IPAMType, "ipv4_pools": []string{"nope"}}
	}), containerVars("logs-2", e.workloadNS(), "eth0", "")...)
	te := bad.cniError(t)
	var only types.Error
	if err := json.Unmarshal(bad.stdout, &only); err != nil || te.Code != types.ErrInvalidNetworkConfig {
		t.Errorf("stdout of a failed ADD: %v\n%s", err, bad.stdout)
	}
	if s := string(bad.stderr); !strings.Contains(s, "level=ERROR") || !strings.Contains(s, `ipam.ipv4_pools entry \"nope\"`) || strings.Count(s, "\n") != 1 {
		t.Errorf("stderr of a failed ADD, want the one error line:\n%s", s)
	}
	if b, _ := os.ReadFile(logPath); !bytes.Contains(b, []byte(`ipam.ipv4_pools entry \"nope\"`)) {
		t.Errorf("the error is not in the log file:\n%s", b)
	}

	// log_level error: nothing but errors in the file.
	before, _ := os.ReadFile(logPath)
	del := e.exec(cni.PluginType, "DEL", conf(func(p map[string]any) { p["log_level"] = "error" }), vars...)
	del.ok(t, "DEL")
	if after, _ := os.ReadFile(logPath); len(after) != len(before) || len(del.stderr) > 0 || len(del.stdout) > 0 {
		t.Errorf("DEL at log_level error: %d bytes logged, stderr %q, stdout %q", len(after)-len(before), del.stderr, del.stdout)
	}

	// A log file that cannot be opened: the command still works; stderr
	// says so.
	r := e.exec(cni.PluginType, "DEL", conf(func(p map[string]any) { p["log_file_path"] = "/proc/version/cni.log" }), vars...)
	r.ok(t, "DEL with an unusable log file")
	if s := string(r.stderr); !strings.Contains(s, "cannot open the log file") || !strings.Contains(s, "/proc/version/cni.log") {
		t.Errorf("stderr with an unusable log file:\n%s", s)
	}
	e.assertClean(t)
}
