package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/version"
)

// repoRoot is the module's root, two levels up from this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// staticBinaries builds the images' binaries as `make images` does
// (CGO_ENABLED=0, -trimpath), once for the whole test binary; or, when
// TORTIE_IMAGES_BIN names a directory, uses the binaries there (make
// images' bin/static). A binary whose package is not in the tree yet is
// left out (its image's tests skip).
func staticBinaries(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("TORTIE_IMAGES_BIN"); dir != "" {
		return dir
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "tortie-images-bin-")
		if binErr != nil {
			return
		}
		root := repoRoot(t)
		args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", binDir + "/"}
		for _, name := range Names {
			for _, b := range Binaries[name] {
				if _, err := os.Stat(filepath.Join(root, "cmd", b)); err == nil {
					args = append(args, "./cmd/"+b)
				}
			}
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// specOrSkip is the image's spec, or a skip when one of its binaries'
// packages is not in the tree yet.
func specOrSkip(t *testing.T, name string) Spec {
	t.Helper()
	bin := staticBinaries(t)
	for _, b := range Binaries[name] {
		if _, err := os.Stat(filepath.Join(repoRoot(t), "cmd", b)); err != nil {
			t.Skipf("cmd/%s is not in the tree yet", b)
		}
	}
	s, err := SpecFor(name, bin)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readArchive reads an archive back through go-containerregistry's OCI
// layout reader: the index's one descriptor and its image.
func readArchive(t *testing.T, archive string) (v1.Descriptor, v1.Image) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := untar(t, f, dir, func(h *tar.Header) {
		if !h.ModTime.Equal(Epoch) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: %s, uid %d gid %d: want the epoch and root", archive, h.Name, h.Uid, h.Gid)
		}
	})
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("%s: entries not sorted: %s before %s", archive, names[i-1], names[i])
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("%s: %d manifests, want 1", archive, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return im.Manifests[0], img
}

// untar writes a tar stream's directories, links and files under dir,
// calling check (if not nil) on each header, and returns the entries' names
// in order.
func untar(t *testing.T, r io.Reader, dir string, check func(*tar.Header)) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if check != nil {
			check(h)
		}
		p := filepath.Join(dir, filepath.FromSlash(path.Clean("/"+h.Name)))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode&0o777))
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, os.FileMode(h.Mode&0o777))
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// tree is an image's flattened file system.
type tree map[string]*tar.Header

func flatten(t *testing.T, img v1.Image) (tree, map[string][]byte) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	fs, data := tree{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return fs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		p := path.Clean("/" + h.Name)
		fs[p] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			data[p] = b
		}
	}
}

// resolve follows symbolic links in the image, as the kernel would inside
// the container, to a regular file.
func (fs tree) resolve(p string) (string, error) {
	resolved := "/"
	rest := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	for hops := 0; len(rest) > 0; {
		cur := path.Join(resolved, rest[0])
		rest = rest[1:]
		h, ok := fs[cur]
		if !ok {
			return "", fmt.Errorf("%s: %s not in the image", p, cur)
		}
		switch h.Typeflag {
		case tar.TypeSymlink:
			if hops++; hops > 40 {
				return "", fmt.Errorf("%s: link loop", p)
			}
			target := h.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(cur), target)
			}
			rest = append(strings.Split(strings.TrimPrefix(path.Clean(target), "/"), "/"), rest...)
			resolved = "/"
		case tar.TypeDir:
			resolved = cur
		case tar.TypeReg:
			if len(rest) > 0 {
				return "", fmt.Errorf("%s: %s is a file", p, cur)
			}
			return cur, nil
		}
	}
	return "", fmt.Errorf("%s: a directory", p)
}

// loaderDirs are where glibc's loader looks for libraries without an
// ld.so.cache: Debian's multiarch directories and the defaults.
var loaderDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// checkELF checks that a dynamic program of the image finds, inside the
// image, its interpreter and each library it needs, recursively.
func checkELF(t *testing.T, fs tree, data map[string][]byte, prog string, seen map[string]bool) {
	t.Helper()
	real, err := fs.resolve(prog)
	if err != nil {
		t.Error(err)
		return
	}
	if seen[real] {
		return
	}
	seen[real] = true
	f, err := elf.NewFile(bytes.NewReader(data[real]))
	if err != nil {
		t.Errorf("%s: %v", prog, err)
		return
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				t.Fatal(err)
			}
			interp := strings.TrimRight(string(b), "\x00")
			if _, err := fs.resolve(interp); err != nil {
				t.Errorf("%s: its ELF interpreter: %v", prog, err)
			}
		}
	}
	libs, _ := f.ImportedLibraries()
	for _, lib := range libs {
		found := false
		for _, d := range loaderDirs {
			if _, err := fs.resolve(path.Join(d, lib)); err == nil {
				checkELF(t, fs, data, path.Join(d, lib), seen)
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s needs %s, which is in none of %v in the image", prog, lib, loaderDirs)
		}
	}
}

func TestImages(t *testing.T) {
	for _, name := range Names {
		t.Run(name, func(t *testing.T) {
			spec := specOrSkip(t, name)
			a, b := t.TempDir(), t.TempDir()
			built, err := spec.Write(a, DefaultRegistry, DefaultTag)
			if err != nil {
				t.Fatal(err)
			}
			again, err := spec.Write(b, DefaultRegistry, DefaultTag)
			if err != nil {
				t.Fatal(err)
			}
			if built.Digest != again.Digest || fileHash(t, built.Path) != fileHash(t, again.Path) {
				t.Errorf("two builds differ: %s %s, %s %s", built.Digest, fileHash(t, built.Path), again.Digest, fileHash(t, again.Path))
			}
			wantRef := "docker.io/tortie/" + name + ":" + DefaultTag
			if built.Ref != wantRef || filepath.Base(built.Path) != name+".tar" {
				t.Errorf("built %s at %s, want %s at %s.tar", built.Ref, built.Path, wantRef, name)
			}
			t.Logf("%s %s %.1f MB", built.Ref, built.Digest, float64(built.Size)/1e6)

			desc, img := readArchive(t, built.Path)
			if desc.Annotations[AnnotationContainerdName] != wantRef || desc.Annotations[AnnotationRefName] != DefaultTag {
				t.Errorf("index annotations %v, want %s and %s", desc.Annotations, wantRef, DefaultTag)
			}
			if desc.Digest != built.Digest {
				t.Errorf("index digest %s, built %s", desc.Digest, built.Digest)
			}
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			if len(layers) != len(spec.Layers) {
				t.Errorf("%d layers, want %d", len(layers), len(spec.Layers))
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS != "linux" || cf.Architecture == "" || !cf.Created.Equal(Epoch) {
				t.Errorf("config: os %q arch %q created %v", cf.OS, cf.Architecture, cf.Created)
			}
			entry := "/usr/bin/" + Binaries[name][0]
			if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != entry {
				t.Errorf("entrypoint %q, want [%s]", cf.Config.Entrypoint, entry)
			}
			fs, data := flatten(t, img)
			for _, b := range Binaries[name] {
				p := "/usr/bin/" + b
				h, ok := fs[p]
				if !ok || h.Mode&0o111 == 0 {
					t.Errorf("%s missing or not executable", p)
					continue
				}
				src, _ := os.ReadFile(filepath.Join(staticBinaries(t), b))
				if !bytes.Equal(src, data[p]) {
					t.Errorf("%s differs from the built binary", p)
				}
			}
			for p, h := range fs {
				if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(Epoch) {
					t.Errorf("%s: uid %d gid %d mtime %v", p, h.Uid, h.Gid, h.ModTime)
				}
			}
			if h := fs["/tmp"]; h == nil || h.Mode&0o1777 != 0o1777 {
				t.Errorf("/tmp missing or not 1777")
			}
			if name == KubeControllersName && cf.Config.User != "65534:65534" {
				t.Errorf("kube-controllers user %q", cf.Config.User)
			}
			if name != NodeName {
				return
			}
			// The programs the agent runs: on the image's PATH, their loader
			// and libraries inside the image.
			for _, prog := range NodePrograms {
				found := ""
				for _, d := range filepath.SplitList(SystemPath) {
					if _, err := fs.resolve(path.Join(d, prog)); err == nil {
						found = path.Join(d, prog)
						break
					}
				}
				if found == "" {
					t.Errorf("%s not on the image's PATH", prog)
					continue
				}
				checkELF(t, fs, data, found, map[string]bool{})
				// And every library ldd resolves on this machine is there.
				host, _ := exec.LookPath(prog)
				for _, lib := range lddLibs(t, host) {
					if _, err := fs.resolve(lib); err != nil {
						t.Errorf("%s: ldd says %s: %v", prog, lib, err)
					}
				}
			}
			if !contains(cf.Config.Env, "PATH="+SystemPath) {
				t.Errorf("env %q has no PATH", cf.Config.Env)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func fileHash(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// lddLibs is what ldd says a program loads (absolute paths only).
func lddLibs(t *testing.T, prog string) []string {
	t.Helper()
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		t.Logf("ldd %s: %v (not compared)", prog, err)
		return nil
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := lddLine.FindStringSubmatch(sc.Text()); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs
}

// TestNodeImageRuns unpacks the node image and runs its nft, ip and
// tortie-node inside it (chroot): the loader finds the libraries with no
// ld.so.cache and nothing of this machine's.
func TestNodeImageRuns(t *testing.T) {
	testenv.RequireRoot(t)
	spec := specOrSkip(t, NodeName)
	img, err := spec.Image(DefaultTag)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	rc := mutate.Extract(img)
	defer rc.Close()
	untar(t, rc, root, nil)
	for _, argv := range [][]string{
		{"nft", "--version"},
		{"nft", "list", "tables"}, // netlink from inside the image
		{"ip", "-V"},
		{"/usr/bin/tortie-node", "--help"},
		{"/usr/bin/tortie", "--help"},
	} {
		cmd := exec.Command(argv[0], argv[1:]...)
		if !strings.HasPrefix(argv[0], "/") {
			cmd.Path = "/usr/sbin/" + argv[0]
		}
		cmd.Env = []string{"PATH=" + SystemPath}
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%q in the image: %v\n%s", argv, err, out)
		} else {
			t.Logf("%q: %s", argv, firstLine(out))
		}
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// TestTag: the Makefile's IMAGE_TAG, DefaultTag and the version agree, so
// that the manifest's images are the ones `make images` writes.
func TestTag(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE_TAG\s*\??=\s*(\S+)\s*$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("Makefile: no IMAGE_TAG line")
	}
	if string(m[1]) != DefaultTag {
		t.Errorf("Makefile IMAGE_TAG %s, DefaultTag %s", m[1], DefaultTag)
	}
	if DefaultTag != version.Version {
		t.Errorf("DefaultTag %s, version %s: a release changes both", DefaultTag, version.Version)
	}
	if DefaultTag == "latest" {
		t.Error("the tag must not be latest")
	}
}

// TestContainerdImport imports every archive into a private containerd
// (its own socket, root and state under the test's directory), unpacking
// with the native snapshotter, and finds each image under its name with
// the digest the build gave.
func TestContainerdImport(t *testing.T) {
	testenv.RequireRoot(t)
	for _, p := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(p); err != nil {
			testenv.Missing(t, p+" (Debian: apt-get install containerd)")
		}
	}
	var built []Built
	out := t.TempDir()
	for _, name := range Names {
		missing := false
		for _, b := range Binaries[name] {
			if _, err := os.Stat(filepath.Join(repoRoot(t), "cmd", b)); err != nil {
				missing = true
			}
		}
		if missing {
			t.Logf("%s: not built (a binary's package is not in the tree yet)", name)
			continue
		}
		s, err := SpecFor(name, staticBinaries(t))
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Write(out, DefaultRegistry, DefaultTag)
		if err != nil {
			t.Fatal(err)
		}
		built = append(built, b)
	}
	dir, err := os.MkdirTemp("", "ctrd-") // short: the socket's path has a length limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "c.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, filepath.Join(dir, "t.sock"), filepath.Join(dir, "opt"))
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cd := exec.Command("containerd", "--config", cfg)
	cd.Stdout, cd.Stderr = logf, logf
	if err := cd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cd.Process.Kill()
		_ = cd.Wait()
	})
	ctr := func(args ...string) (string, error) {
		out, err := exec.Command("ctr", append([]string{"--address", sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := ctr("version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("containerd did not answer in 30 s:\n%s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, b := range built {
		out, err := ctr("images", "import", "--snapshotter", "native", b.Path)
		if err != nil {
			t.Fatalf("ctr images import %s: %v\n%s", b.Path, err, out)
		}
		if !strings.Contains(out, "unpacking "+b.Ref) || !strings.Contains(out, "done") {
			t.Errorf("ctr images import %s did not unpack %s:\n%s", b.Path, b.Ref, out)
		}
	}
	list, err := ctr("images", "ls")
	if err != nil {
		t.Fatalf("ctr images ls: %v\n%s", err, list)
	}
	for _, b := range built {
		found := false
		for _, line := range strings.Split(list, "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == b.Ref {
				found = true
				if f[2] != b.Digest.String() {
					t.Errorf("%s imported with digest %s, built %s", b.Ref, f[2], b.Digest)
				}
			}
		}
		if !found {
			t.Errorf("%s not among containerd's images:\n%s", b.Ref, list)
		}
		// Unpacked: the native snapshotter has the image's layers.
		if out, err := ctr("images", "check", "name=="+b.Ref); err != nil || !strings.Contains(out, "complete") {
			t.Errorf("ctr images check %s: %v\n%s", b.Ref, err, out)
		}
	}
	t.Logf("imported:\n%s", list)
}

func TestLayerDeterminism(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "f")
	if err := os.WriteFile(src, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := Layer{Entries: []Entry{
		{Path: "/usr/bin-x/a", Kind: File, Data: []byte("a")},
		{Path: "/usr/bin/b", Kind: File, Source: src, Exec: true},
		{Path: "/usr/sbin", Kind: Symlink, Target: "bin"},
		{Path: "/tmp", Kind: Dir, Mode: 0o1777},
	}}
	b1, err := l.tarBytes()
	if err != nil {
		t.Fatal(err)
	}
	// Another order, another mtime on the source: the same bytes.
	l.Entries[0], l.Entries[3] = l.Entries[3], l.Entries[0]
	if err := os.Chtimes(src, Epoch.AddDate(10, 0, 0), Epoch.AddDate(10, 0, 0)); err != nil {
		t.Fatal(err)
	}
	b2, err := l.tarBytes()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Error("the same entries in another order gave another layer")
	}
	var got []string
	tr := tar.NewReader(bytes.NewReader(b1))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %o", h.Name, h.Mode))
	}
	want := "tmp/ 1777,usr/ 755,usr/bin/ 755,usr/bin/b 755,usr/bin-x/ 755,usr/bin-x/a 644,usr/sbin 755"
	if strings.Join(got, ",") != want {
		t.Errorf("entries\n%s\nwant\n%s", strings.Join(got, ","), want)
	}
	// Conflicts are refused.
	bad := Layer{Entries: []Entry{{Path: "/a", Kind: File, Data: []byte("1")}, {Path: "/a/b", Kind: File}}}
	if _, err := bad.tarBytes(); err == nil {
		t.Error("a file as a parent directory was accepted")
	}
}

func TestCheckStatic(t *testing.T) {
	if err := checkStatic("/usr/sbin/nft"); err == nil {
		t.Error("nft (C, dynamic) accepted as a static Go binary")
	}
	bin := staticBinaries(t)
	if err := checkStatic(filepath.Join(bin, "tortie-cni")); err != nil {
		t.Error(err)
	}
}
