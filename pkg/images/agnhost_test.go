package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
)

// checkAgnhostArchive reads an agnhost archive back and checks what the
// netpol e2e tests and the upstream image's layout need: the name the e2e
// framework pulls, /agnhost as the entrypoint (the binary's bytes), the
// link, porter's files, the users and the directories.
func checkAgnhostArchive(t *testing.T, archive, binary string, files map[string][]byte) {
	t.Helper()
	desc, img := readArchive(t, archive)
	if got := desc.Annotations[AnnotationContainerdName]; got != "registry.k8s.io/e2e-test-images/agnhost:2.66.1" || got != AgnhostRef {
		t.Errorf("containerd name %q, want %q", got, AgnhostRef)
	}
	if got := desc.Annotations[AnnotationRefName]; got != AgnhostTag {
		t.Errorf("ref name %q, want %q", got, AgnhostTag)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cf.Config.Entrypoint, " "); got != "/agnhost" {
		t.Errorf("entrypoint %q, want /agnhost", got)
	}
	if cf.Config.User != "" || cf.Config.WorkingDir != "/" {
		t.Errorf("user %q, working directory %q: want root (upstream's) and / (where porter finds its certificate)", cf.Config.User, cf.Config.WorkingDir)
	}
	if len(cf.Config.Env) != 1 || cf.Config.Env[0] != envPath {
		t.Errorf("env %q, want [%s]", cf.Config.Env, envPath)
	}
	fs, data := flatten(t, img)
	want, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if h := fs["/agnhost"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o755 {
		t.Errorf("/agnhost: %+v, want a file of mode 0755", h)
	} else if !bytes.Equal(data["/agnhost"], want) {
		t.Errorf("/agnhost: %d bytes, not %s's %d", len(data["/agnhost"]), binary, len(want))
	}
	if real, err := fs.resolve("/agnhost-2"); err != nil || real != "/agnhost" {
		t.Errorf("/agnhost-2 resolves to %q, %v; want /agnhost", real, err)
	}
	for name, b := range files {
		if !bytes.Equal(data["/"+name], b) {
			t.Errorf("/%s: %q, want %q", name, data["/"+name], b)
		}
	}
	for p, mode := range map[string]int64{"/uploads": 0o755, "/tmp": 0o1777, "/home/user-defined-in-image": 0o755} {
		if h := fs[p]; h == nil || h.Typeflag != tar.TypeDir || h.Mode != mode {
			t.Errorf("%s: %+v, want a directory of mode %o", p, h, mode)
		}
	}
	for p, line := range map[string]string{
		"/etc/passwd": "user-defined-in-image:x:1000:1000:",
		"/etc/group":  "group-defined-in-image:x:50000:user-defined-in-image",
	} {
		if !strings.Contains(string(data[p]), line) || !strings.HasPrefix(string(data[p]), "root:x:0:") {
			t.Errorf("%s: %q, want root and %q", p, data[p], line)
		}
	}
}

// standInFiles writes porter's two files with made-up contents.
func standInFiles(t *testing.T) (string, map[string][]byte) {
	dir := t.TempDir()
	files := map[string][]byte{}
	for _, f := range AgnhostFiles {
		files[f] = []byte("not really " + f + "\n")
		if err := os.WriteFile(filepath.Join(dir, f), files[f], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, files
}

// standInBinary is a static Go binary (one of tortie's) that stands in for
// agnhost, or a skip when none is in the tree yet.
func standInBinary(t *testing.T) string {
	t.Helper()
	var binary string
	bin := staticBinaries(t)
	for _, name := range Names {
		if p := filepath.Join(bin, Binaries[name][0]); fileExists(p) {
			binary = p
			break
		}
	}
	if binary == "" {
		t.Skip("none of the images' binaries is in the tree yet")
	}
	return binary
}

// TestAgnhostImage builds the image around a stand-in static Go binary (one
// of tortie's), so that it runs without a cached agnhost: the archive reads
// back, and the same inputs give the same digest.
func TestAgnhostImage(t *testing.T) {
	binary := standInBinary(t)
	filesDir, files := standInFiles(t)
	spec, err := AgnhostSpec(binary, filesDir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := spec.Write(t.TempDir(), E2ERegistry, AgnhostTag)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(a.Path) != "agnhost.tar" || a.Ref != AgnhostRef {
		t.Errorf("wrote %s as %s, want agnhost.tar as %s", a.Path, a.Ref, AgnhostRef)
	}
	checkAgnhostArchive(t, a.Path, binary, files)
	b, err := spec.Write(t.TempDir(), E2ERegistry, AgnhostTag)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest || a.Size != b.Size {
		t.Errorf("two builds differ: %s (%d bytes), %s (%d bytes)", a.Digest, a.Size, b.Digest, b.Size)
	}

	// What AgnhostSpec and WriteE2EImages refuse.
	if _, err := AgnhostSpec("/bin/sh", filesDir); err == nil {
		t.Error("AgnhostSpec took /bin/sh, a dynamically linked program")
	}
	if _, err := AgnhostSpec(binary, t.TempDir()); err == nil || !strings.Contains(err.Error(), "localhost.crt") {
		t.Errorf("AgnhostSpec without porter's certificate: %v", err)
	}
	cache := t.TempDir()
	if err := os.MkdirAll(filepath.Join(cache, "share", AgnhostName), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "share", AgnhostName, "VERSION"), []byte("2.55\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteE2EImages(cache); err == nil || !strings.Contains(err.Error(), AgnhostRef) {
		t.Errorf("WriteE2EImages with agnhost 2.55: %v, want a refusal naming %s", err, AgnhostRef)
	}
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// TestAgnhostCached builds the image from what scripts/build-kubernetes.sh
// agnhost cached, as WriteE2EImages does (into a scratch cache beside the
// real one), reads it back, and runs the image's /agnhost as the netpol
// tests do: `porter` serving a TCP and a UDP port, `connect` reaching each
// on the loopback, and failing on a closed port.
func TestAgnhostCached(t *testing.T) {
	real := KubernetesCache(KubernetesVersion)
	binary := filepath.Join(real, "bin", AgnhostName)
	share := filepath.Join(real, "share", AgnhostName)
	if !fileExists(binary) || !fileExists(filepath.Join(share, "VERSION")) {
		testenv.Missing(t, binary+" and "+share+" (scripts/build-kubernetes.sh agnhost)")
	}
	cache := t.TempDir()
	for _, d := range []string{"bin", "share"} {
		if err := os.Mkdir(filepath.Join(cache, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(binary, filepath.Join(cache, "bin", AgnhostName)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(share, filepath.Join(cache, "share", AgnhostName)); err != nil {
		t.Fatal(err)
	}
	built, err := WriteE2EImages(cache)
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 1 || built[0].Path != filepath.Join(cache, "images", "agnhost.tar") {
		t.Fatalf("WriteE2EImages wrote %+v, want images/agnhost.tar", built)
	}
	t.Logf("%s %s %.1f MB", built[0].Ref, built[0].Digest, float64(built[0].Size)/1e6)
	files := map[string][]byte{}
	for _, f := range AgnhostFiles {
		b, err := os.ReadFile(filepath.Join(share, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	if !bytes.Contains(files["localhost.crt"], []byte("BEGIN CERTIFICATE")) || !bytes.Contains(files["localhost.key"], []byte("PRIVATE KEY")) {
		t.Errorf("porter's files are not a certificate and a key: %q", files)
	}
	checkAgnhostArchive(t, built[0].Path, binary, files)

	// The image's own /agnhost, extracted.
	_, img := readArchive(t, built[0].Path)
	_, data := flatten(t, img)
	agnhost := filepath.Join(t.TempDir(), "agnhost")
	if err := os.WriteFile(agnhost, data["/agnhost"], 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(agnhost, "--version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "app version "+AgnhostTag {
		t.Errorf("agnhost --version: %q, %v; want app version %s", out, err, AgnhostTag)
	}

	tcp, udp := freePort(t, "tcp"), freePort(t, "udp")
	porter := exec.Command(agnhost, "porter")
	porter.Env = []string{
		fmt.Sprintf("SERVE_TCP_PORT_%d=foo", tcp),
		fmt.Sprintf("SERVE_UDP_PORT_%d=foo", udp),
	}
	var porterOut bytes.Buffer
	porter.Stdout, porter.Stderr = &porterOut, &porterOut
	if err := porter.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		porter.Process.Kill()
		porter.Wait()
		if t.Failed() {
			t.Logf("porter's output:\n%s", porterOut.String())
		}
	}()
	connect := func(port int, proto string) error {
		// As kubemanager.go probes: connect HOST:PORT --timeout=3s --protocol=P
		out, err := exec.Command(agnhost, "connect", fmt.Sprintf("127.0.0.1:%d", port), "--timeout=3s", "--protocol="+proto).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	for _, c := range []struct {
		port  int
		proto string
	}{{tcp, "tcp"}, {udp, "udp"}} {
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if err = connect(c.port, c.proto); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Errorf("connect to porter's %s port %d: %v", c.proto, c.port, err)
		}
	}
	closed := freePort(t, "tcp")
	if err := connect(closed, "tcp"); err == nil {
		t.Errorf("connect to the closed TCP port %d succeeded", closed)
	}
}

// freePort is a port of the loopback that nothing listens on just now.
func freePort(t *testing.T, network string) int {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	default:
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
}

// TestAgnhostName checks the name and tag against the e2e framework of
// KubernetesVersion, when its source is in the module cache (scripts/
// build-kubernetes.sh downloads it there).
func TestAgnhostName(t *testing.T) {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "k8s.io", "kubernetes@"+KubernetesVersion)
	manifest, err := os.ReadFile(filepath.Join(src, "test", "utils", "image", "manifest.go"))
	if os.IsNotExist(err) {
		testenv.Missing(t, "k8s.io/kubernetes@"+KubernetesVersion+" in the module cache (scripts/build-kubernetes.sh)")
	}
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`configs\[Agnhost\] = Config\{list\.PromoterE2eRegistry, "agnhost", "([^"]+)"\}`).FindSubmatch(manifest)
	if m == nil || string(m[1]) != AgnhostTag {
		t.Errorf("manifest.go's agnhost: %q, want tag %s", m, AgnhostTag)
	}
	if !bytes.Contains(manifest, []byte(`PromoterE2eRegistry:      "`+E2ERegistry+`"`)) {
		t.Errorf("manifest.go's PromoterE2eRegistry is not %s", E2ERegistry)
	}
	v, err := os.ReadFile(filepath.Join(src, "test", "images", "agnhost", "VERSION"))
	if err != nil || strings.TrimSpace(string(v)) != AgnhostTag {
		t.Errorf("test/images/agnhost/VERSION: %q, %v; want %s", v, err, AgnhostTag)
	}
	// The netpol tests pull no other image.
	netpol, err := filepath.Glob(filepath.Join(src, "test", "e2e", "network", "netpol", "*.go"))
	if err != nil || len(netpol) == 0 {
		t.Fatalf("netpol sources: %v %v", netpol, err)
	}
	images := regexp.MustCompile(`imageutils\.Get\w*\(imageutils\.(\w+)\)`)
	for _, f := range netpol {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range images.FindAllSubmatch(b, -1) {
			if string(m[1]) != "Agnhost" {
				t.Errorf("%s pulls imageutils.%s, which WriteE2EImages does not build", filepath.Base(f), m[1])
			}
		}
		if bytes.Contains(b, []byte("Image:")) && !bytes.Contains(b, []byte("imageutils.GetE2EImage(imageutils.Agnhost)")) {
			t.Errorf("%s names an image some other way", filepath.Base(f))
		}
	}
}
