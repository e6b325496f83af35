package images

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"sigs.k8s.io/network-policy-api/conformance"

	"github.com/tortie/tortie/internal/testenv"
)

// checkCNPConformanceArchive reads the conformance suite's agnhost archive
// back: the name the suite pulls, the entrypoint `/agnhost pause`, the
// agnhost binary's bytes, and /bin/bash with its loader and libraries.
func checkCNPConformanceArchive(t *testing.T, archive, binary string) {
	t.Helper()
	desc, img := readArchive(t, archive)
	if got := desc.Annotations[AnnotationContainerdName]; got != "registry.k8s.io/e2e-test-images/agnhost:2.45" || got != CNPConformanceAgnhostRef {
		t.Errorf("containerd name %q, want %q", got, CNPConformanceAgnhostRef)
	}
	if got := desc.Annotations[AnnotationRefName]; got != CNPConformanceAgnhostTag {
		t.Errorf("ref name %q, want %q", got, CNPConformanceAgnhostTag)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cf.Config.Entrypoint, " "); got != "/agnhost pause" || len(cf.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q, command %q: want /agnhost pause and none", got, cf.Config.Cmd)
	}
	if cf.Config.User != "" || cf.Config.WorkingDir != "/" {
		t.Errorf("user %q, working directory %q: want root and /", cf.Config.User, cf.Config.WorkingDir)
	}
	fs, data := flatten(t, img)
	want, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data["/agnhost"], want) {
		t.Errorf("/agnhost: %d bytes, not %s's %d", len(data["/agnhost"]), binary, len(want))
	}
	checkELF(t, fs, data, "/bin/bash", map[string]bool{})
	host, err := os.ReadFile("/bin/bash")
	if err != nil {
		t.Fatal(err)
	}
	if real, err := fs.resolve("/bin/bash"); err != nil || !bytes.Equal(data[real], host) {
		t.Errorf("/bin/bash resolves to %q (%v), not this machine's bash", real, err)
	}
	for _, f := range AgnhostFiles {
		if _, ok := fs["/"+f]; !ok {
			t.Errorf("/%s missing", f)
		}
	}
}

// TestCNPConformanceAgnhostImage builds the image around a stand-in static
// Go binary (one of tortie's), so that it runs without a cached agnhost: the
// archive reads back, and the same inputs give the same digest.
func TestCNPConformanceAgnhostImage(t *testing.T) {
	binary := standInBinary(t)
	filesDir, _ := standInFiles(t)
	spec, err := CNPConformanceAgnhostSpec(binary, filesDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Layers) != 2 {
		t.Errorf("%d layers, want agnhost's and bash's", len(spec.Layers))
	}
	a, err := spec.Write(t.TempDir(), E2ERegistry, CNPConformanceAgnhostTag)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(a.Path) != "agnhost.tar" || a.Ref != CNPConformanceAgnhostRef {
		t.Errorf("wrote %s as %s, want agnhost.tar as %s", a.Path, a.Ref, CNPConformanceAgnhostRef)
	}
	checkCNPConformanceArchive(t, a.Path, binary)
	b, err := spec.Write(t.TempDir(), E2ERegistry, CNPConformanceAgnhostTag)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest || a.Size != b.Size {
		t.Errorf("two builds differ: %s (%d bytes), %s (%d bytes)", a.Digest, a.Size, b.Digest, b.Size)
	}

	// What it refuses: AgnhostSpec's refusals, and an agnhost of another
	// version.
	if _, err := CNPConformanceAgnhostSpec("/bin/sh", filesDir); err == nil {
		t.Error("CNPConformanceAgnhostSpec took /bin/sh, a dynamically linked program")
	}
	cache := t.TempDir()
	if err := os.MkdirAll(filepath.Join(cache, "share", AgnhostName), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "share", AgnhostName, "VERSION"), []byte("2.45\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteCNPConformanceImages(cache, ""); err == nil || !strings.Contains(err.Error(), AgnhostTag) {
		t.Errorf("WriteCNPConformanceImages with agnhost 2.45: %v, want a refusal naming %s", err, AgnhostTag)
	}
}

// TestCNPConformanceAgnhostName checks the name against what the suite's
// base manifests (embedded in the suite's module, the version go.mod
// requires) pull, and that their containers need only /bin/bash and
// /agnhost.
func TestCNPConformanceAgnhostName(t *testing.T) {
	b, err := conformance.Manifests.ReadFile("base/manifests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	images := regexp.MustCompile(`(?m)^\s*image:\s*(\S+)\s*$`).FindAllSubmatch(b, -1)
	if len(images) == 0 {
		t.Fatal("base/manifests.yaml names no image")
	}
	for _, m := range images {
		if string(m[1]) != CNPConformanceAgnhostRef {
			t.Errorf("base/manifests.yaml pulls %s, want only %s", m[1], CNPConformanceAgnhostRef)
		}
	}
	commands := regexp.MustCompile(`(?m)^\s*command:\s*(.*)$`).FindAllSubmatch(b, -1)
	if len(commands) == 0 {
		t.Fatal("base/manifests.yaml has no command")
	}
	for _, m := range commands {
		if !strings.HasPrefix(string(m[1]), `["/bin/bash", "-c", "/agnhost `) {
			t.Errorf("a command the image may not run: %s", m[1])
		}
	}
	// No other manifest of the suite runs a container.
	for _, dir := range []string{"base/admin_tier", "base/baseline_tier", "base/api_integration"} {
		entries, err := conformance.Manifests.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			m, err := conformance.Manifests.ReadFile(dir + "/" + e.Name())
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(m, []byte("image:")) {
				t.Errorf("%s/%s names an image", dir, e.Name())
			}
		}
	}
}

// TestCNPConformanceAgnhostCached builds the image from what scripts/
// build-kubernetes.sh agnhost cached, as WriteCNPConformanceImages does,
// reads it back, unpacks it and, as root, runs its programs in it as the
// suite's pods do: `/bin/bash -c "/agnhost serve-hostname --tcp ..."` and
// `/agnhost connect` to it, and `/agnhost pause` as the entrypoint.
func TestCNPConformanceAgnhostCached(t *testing.T) {
	real := KubernetesCache(KubernetesVersion)
	binary := filepath.Join(real, "bin", AgnhostName)
	if !fileExists(binary) || !fileExists(filepath.Join(real, "share", AgnhostName, "VERSION")) {
		testenv.Missing(t, binary+" and its share/ (scripts/build-kubernetes.sh agnhost)")
	}
	out := t.TempDir()
	built, err := WriteCNPConformanceImages(real, out)
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 1 || built[0].Path != filepath.Join(out, "agnhost.tar") || built[0].Ref != CNPConformanceAgnhostRef {
		t.Fatalf("WriteCNPConformanceImages wrote %+v, want %s as agnhost.tar", built, CNPConformanceAgnhostRef)
	}
	t.Logf("%s %s %.1f MB", built[0].Ref, built[0].Digest, float64(built[0].Size)/1e6)
	checkCNPConformanceArchive(t, built[0].Path, binary)

	testenv.RequireRoot(t)
	root := t.TempDir()
	_, img := readArchive(t, built[0].Path)
	rc := mutate.Extract(img)
	untar(t, rc, root, nil)
	rc.Close()
	run := func(args ...string) *exec.Cmd {
		return exec.Command("chroot", append([]string{root}, args...)...)
	}
	if out, err := run("/bin/bash", "-c", "/agnhost --version").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "app version "+AgnhostTag {
		t.Errorf("bash -c '/agnhost --version' in the image: %q, %v", out, err)
	}
	port := freePort(t, "tcp")
	server := run("/bin/bash", "-c", fmt.Sprintf("/agnhost serve-hostname --tcp --http=false --port %d", port))
	var serverOut bytes.Buffer
	server.Stdout, server.Stderr = &serverOut, &serverOut
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		server.Process.Kill()
		server.Wait()
		if t.Failed() {
			t.Logf("serve-hostname's output:\n%s", serverOut.String())
		}
	}()
	var connectErr error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var out []byte
		out, connectErr = run("/agnhost", "connect", "--timeout=3s", "--protocol=tcp", fmt.Sprintf("127.0.0.1:%d", port)).CombinedOutput()
		if connectErr == nil && len(out) == 0 {
			break
		}
		connectErr = fmt.Errorf("%v: %q", connectErr, out)
		if time.Now().After(deadline) {
			break
		}
	}
	if connectErr != nil {
		t.Errorf("agnhost connect to serve-hostname on %d: %v", port, connectErr)
	}
	// What the entrypoint runs for a container without a command (the
	// clients): pause, which keeps running until it is killed.
	pause := run("/agnhost", "pause")
	if err := pause.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- pause.Wait() }()
	select {
	case err := <-exited:
		t.Errorf("/agnhost pause exited: %v", err)
	case <-time.After(time.Second):
		pause.Process.Kill()
		<-exited
	}
}
