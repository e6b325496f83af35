package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
)

// Kubectl runs the cached kubectl (Binary("kubectl")) against the cluster
// of kubeconfig and returns its standard output; on failure the error
// (a *KubectlError) carries its standard error.
func Kubectl(ctx context.Context, kubeconfig string, args ...string) (string, error) {
	return KubectlInput(ctx, kubeconfig, nil, args...)
}

// KubectlInput is Kubectl with stdin as kubectl's standard input (for
// `apply -f -`).
func KubectlInput(ctx context.Context, kubeconfig string, stdin io.Reader, args ...string) (string, error) {
	bin, err := Binary("kubectl")
	if err != nil {
		return "", err
	}
	// Discovery is cached beside the kubeconfig, not in $HOME.
	full := append([]string{"--kubeconfig=" + kubeconfig, "--cache-dir=" + filepath.Join(filepath.Dir(kubeconfig), ".kubectl-cache")}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), &KubectlError{Args: args, Stderr: errb.String(), Err: err}
	}
	return out.String(), nil
}

// KubectlError is a kubectl run that failed.
type KubectlError struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *KubectlError) Error() string {
	return fmt.Sprintf("kubectl %s: %v: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Stderr))
}

func (e *KubectlError) Unwrap() error { return e.Err }
