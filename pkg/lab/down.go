package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Down removes a lab: every process, namespace, interface and file its
// state records, and restores the CLI's config file. It works on a lab
// half made or left by a crash, and on one already gone (an error saying so).
// Interrupted (ctx ends), it still kills the lab's processes, then stops
// and keeps the state file: Down again finishes.
func Down(ctx context.Context, name string, log io.Writer) error {
	if name == "" {
		var err error
		if name, err = defaultLab(); err != nil {
			return err
		}
	}
	if err := ValidName(name); err != nil {
		return err
	}
	if _, err := os.Stat(Dir(name)); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lab %q: %w", name, ErrNoLab)
	}
	unlock, err := lockLab(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(name)
	if err != nil {
		if !errors.Is(err, ErrNoLab) {
			return err
		}
		// A directory without state: Up died before writing any; nothing
		// but the directory was made.
		st = &State{Name: name}
	}
	l := &Lab{st: st, log: log}
	return l.teardown(ctx)
}

// teardown undoes everything in the state, in reverse: processes first
// (they hold namespaces open), then the root leg, the namespaces, the CLI
// config, the directory. It is the one way a lab is removed: by Down, and
// by Up for what it had made when it fails or is interrupted. When ctx
// ends, processes are killed without their grace period and the rest is
// left, recorded, for another try.
func (l *Lab) teardown(ctx context.Context) error {
	st := l.st
	var errs []error
	// Workload servers and agents first, the datastore last: agents
	// (and the Kubernetes controllers, then the API server) stopping with
	// their datastore still there exit cleanly.
	order := map[string]int{"server": 0, "agent": 1, roleKubeControllers: 1, roleKubeControllerManager: 1, roleKubeScheduler: 1,
		"bird": 2, roleKubeAPIServer: 3, "datastore": 4}
	// The Kubernetes nodes first, with their pods (tortie's agents
	// among them), while the API server and datastore still answer.
	if err := l.downNodes(ctx); err != nil {
		errs = append(errs, err)
	}
	procs := append([]Proc(nil), st.Procs...)
	for pass := 0; pass <= 4; pass++ {
		for _, p := range procs {
			if order[p.Role] == pass {
				p.stop(ctx, 5*time.Second)
			}
		}
	}
	// Anything else still inside the lab's namespaces (a `lab exec` left
	// running) would keep them, and their interfaces, alive.
	for _, p := range procsInNetns(st.Netns) {
		p.stop(ctx, 2*time.Second)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("lab %s: %w after stopping its processes (its state is kept: `tortie lab down --name %s` removes the rest)", st.Name, interrupted(ctx), st.Name)
	}
	if st.RootLink != "" && linkExists(st.RootLink) {
		if err := ipn(ctx, "", "link", "del", st.RootLink); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(st.Netns) - 1; i >= 0; i-- {
		n := st.Netns[i]
		if _, err := os.Stat(filepath.Join("/run/netns", n)); err != nil {
			continue
		}
		if err := ipn(ctx, "", "netns", "del", n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := l.restoreCLIConfig(); err != nil {
		errs = append(errs, err)
	}
	for i := len(st.Dirs) - 1; i >= 0; i-- {
		_ = os.Remove(st.Dirs[i]) // only when empty
	}
	if len(errs) > 0 {
		// Keep the state for another try.
		return fmt.Errorf("lab %s: %w (its state is kept: `tortie lab down --name %s` tries again)", st.Name, errors.Join(errs...), st.Name)
	}
	if err := os.RemoveAll(Dir(st.Name)); err != nil {
		return err
	}
	// RunDir and its parent are the labs' own; gone with the last lab.
	if ents, _ := os.ReadDir(RunDir); len(ents) == 1 && ents[0].Name() == ".alloc.lock" {
		_ = os.Remove(filepath.Join(RunDir, ".alloc.lock"))
	}
	_ = os.Remove(RunDir)
	_ = os.Remove(filepath.Dir(RunDir))
	l.logf("lab %s removed: %d processes, %d namespaces, interface %s", st.Name, len(st.Procs), len(st.Netns), st.RootLink)
	return nil
}

// labConfigMark starts every config file a lab wrote.
const labConfigMark = "# written by `tortie lab up` for lab "

func cliConfigText(lab, endpoint string) string {
	return fmt.Sprintf(`%s%s; `+"`tortie lab down`"+` restores what was here before.
apiVersion: projectcalico.org/v3
kind: CalicoAPIConfig
metadata: {}
spec:
  datastoreType: etcdv3
  etcdEndpoints: %s
`, labConfigMark, lab, endpoint)
}

// ConfigFile is the copy of the CLI config every lab keeps in its
// directory (for --config), whether or not it could write CLIConfigFile.
func ConfigFile(lab string) string { return filepath.Join(Dir(lab), "tortie.cfg") }

// writeCLIConfig points the CLI at the lab: CLIConfigFile is written when
// it is absent or another lab wrote it (whose text is kept, to be put back).
func (l *Lab) writeCLIConfig() error {
	text := cliConfigText(l.st.Name, l.st.Endpoint)
	if err := os.WriteFile(ConfigFile(l.st.Name), []byte(text), 0o644); err != nil {
		return err
	}
	prev, err := os.ReadFile(CLIConfigFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case !strings.HasPrefix(string(prev), labConfigMark):
		l.logf("note: %s exists and was not written by a lab: left alone; use `--config %s` or ETCD_ENDPOINTS=%s",
			CLIConfigFile, ConfigFile(l.st.Name), l.st.Endpoint)
		return nil
	}
	dir := filepath.Dir(CLIConfigFile)
	c := &ConfigBackup{Path: CLIConfigFile, Existed: err == nil, Previous: string(prev), Written: text}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		c.MadeDir = true
	} else if c.Existed {
		// The directory may be the previous lab's making: inherit that.
		if pst, err := loadState(configLab(c.Previous)); err == nil && pst.Config != nil {
			c.MadeDir = pst.Config.MadeDir
		}
	}
	l.st.Config = c
	if err := l.save(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(CLIConfigFile, []byte(text), 0o644)
}

// restoreCLIConfig puts back what was there before, if the file is still
// the lab's: the previous lab's config if that lab is still up, else
// nothing.
func (l *Lab) restoreCLIConfig() error {
	c := l.st.Config
	if c == nil {
		return nil
	}
	cur, err := os.ReadFile(c.Path)
	if err != nil || string(cur) != c.Written {
		return nil // changed since, by someone else: theirs now
	}
	if c.Existed && c.Previous != "" {
		// The previous text is another lab's: keep it only if that lab
		// still exists and nobody restored something else meanwhile.
		prevLab := configLab(c.Previous)
		if _, err := os.Stat(statePath(prevLab)); err == nil && prevLab != l.st.Name {
			return os.WriteFile(c.Path, []byte(c.Previous), 0o644)
		}
	}
	if err := os.Remove(c.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if c.MadeDir {
		_ = os.Remove(filepath.Dir(c.Path)) // only when empty
	}
	return nil
}

// configLab is the lab that wrote a config text ("" if none did).
func configLab(text string) string {
	if !strings.HasPrefix(text, labConfigMark) {
		return ""
	}
	return strings.TrimPrefix(strings.SplitN(text, ";", 2)[0], labConfigMark)
}
