package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Programs are the packages of the static programs the images hold, by
// program name, as import paths (so that go builds them from any directory
// of the module): tortie's binaries (Binaries) and the two test images'
// programs.
var Programs = map[string]string{
	"tortie":                  "github.com/tortie/tortie/cmd/tortie",
	"tortie-node":             "github.com/tortie/tortie/cmd/tortie-node",
	"tortie-cni":              "github.com/tortie/tortie/cmd/tortie-cni",
	"tortie-install-cni":      "github.com/tortie/tortie/cmd/tortie-install-cni",
	"tortie-kube-controllers": "github.com/tortie/tortie/cmd/tortie-kube-controllers",
	PauseName:                 "github.com/tortie/tortie/pkg/kube/node/internal/pause",
	EchoServerName:            "github.com/tortie/tortie/pkg/kube/node/internal/echoserver",
}

// AllArchives are the archives WriteAll writes, by file name: tortie's
// images and the two test images.
var AllArchives = []string{NodeName + ".tar", CNIName + ".tar", KubeControllersName + ".tar", PauseName + ".tar", EchoServerName + ".tar"}

// BuildPrograms builds the named programs (keys of Programs; none: all)
// as `make images` does, static (CGO_ENABLED=0), -trimpath, stripped, into
// binDir, from the module moduleDir is in ("": the working directory's), with goFlags added to
// `go build` (such as -buildvcs=false).
func BuildPrograms(ctx context.Context, moduleDir, binDir string, goFlags []string, names ...string) error {
	if len(names) == 0 {
		for n := range Programs {
			names = append(names, n)
		}
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	abs, err := filepath.Abs(binDir)
	if err != nil {
		return err
	}
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", abs + string(filepath.Separator)}, goFlags...)
	for _, n := range names {
		pkg, ok := Programs[n]
		if !ok {
			return fmt.Errorf("no program %q of an image", n)
		}
		args = append(args, pkg)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s (in %s): %v\n%s", strings.Join(args, " "), moduleDir, err, out)
	}
	return nil
}

// WriteAll writes every image from the static programs in binDir to out:
// tortie's (Names, as registry/NAME:tag) and the test images (pause, as
// PauseRef; echoserver, as EchoServerRef), in the order of AllArchives.
func WriteAll(binDir, out, registry, tag string) ([]Built, error) {
	specs, err := Specs(binDir)
	if err != nil {
		return nil, err
	}
	var built []Built
	for _, s := range specs {
		b, err := s.Write(out, registry, tag)
		if err != nil {
			return built, fmt.Errorf("%s: %w", s.Name, err)
		}
		built = append(built, b)
	}
	p, err := WritePause(out, filepath.Join(binDir, PauseName))
	if err != nil {
		return built, err
	}
	e, err := WriteEchoServer(out, filepath.Join(binDir, EchoServerName))
	if err != nil {
		return built, err
	}
	return append(built, p, e), nil
}
