package images

import "fmt"

// Images for running real kubelets (package kube/node): a pod sandbox
// image and a test workload image, from static Go programs given by path
// (kube/node builds them from its internal/pause and internal/echoserver).

// The pause image: containerd's sandbox_image of the nodes tortie runs.
// Kubernetes v1.37's kubelet no longer names a sandbox image (the runtime
// does); 3.10.2 is the one kubeadm v1.37 pins (PauseVersion), so a pod
// spec or tool that names it finds this image.
const (
	PauseRegistry = "registry.k8s.io"
	PauseName     = "pause"
	PauseTag      = "3.10.2"
)

// PauseRef is the pause image's reference.
var PauseRef = Ref(PauseRegistry, PauseName, PauseTag)

// The test workload image: echoserver, serving HTTP on 8080 (host name and
// caller), TCP echo on 8081, UDP echo on 8082; `echoserver get URL` is its
// client for kubectl exec.
const (
	EchoServerName = "echoserver"
	// EchoServerTag is not "latest", so IfNotPresent never pulls it.
	EchoServerTag = DefaultTag
)

// EchoServerRef is the test image's reference.
var EchoServerRef = Ref(DefaultRegistry, EchoServerName, EchoServerTag)

// PauseSpec is the pause image of the static binary at pause: /pause as
// entrypoint, run as nobody, as the upstream image is.
func PauseSpec(pause string) (Spec, error) {
	if err := checkStatic(pause); err != nil {
		return Spec{}, fmt.Errorf("pause image: %w", err)
	}
	return Spec{
		Name:       PauseName,
		Layers:     []Layer{{Comment: "pause", Entries: []Entry{{Path: "/pause", Kind: File, Exec: true, Source: pause}}}},
		Entrypoint: []string{"/pause"},
		User:       "65535:65535",
	}, nil
}

// EchoServerSpec is the test image of the static binary at echoserver:
// /usr/bin/echoserver as entrypoint, with /tmp and /etc/passwd.
func EchoServerSpec(echoserver string) (Spec, error) {
	if err := checkStatic(echoserver); err != nil {
		return Spec{}, fmt.Errorf("echoserver image: %w", err)
	}
	entries := append(base(), Entry{Path: "/usr/bin/echoserver", Kind: File, Exec: true, Source: echoserver})
	return Spec{
		Name:       EchoServerName,
		Layers:     []Layer{{Comment: "echoserver", Entries: entries}},
		Entrypoint: []string{"/usr/bin/echoserver"},
		Env:        []string{envPath},
	}, nil
}

// WritePause writes the pause image to <dir>/pause.tar.
func WritePause(dir, pause string) (Built, error) {
	s, err := PauseSpec(pause)
	if err != nil {
		return Built{}, err
	}
	return s.Write(dir, PauseRegistry, PauseTag)
}

// WriteEchoServer writes the test image to <dir>/echoserver.tar.
func WriteEchoServer(dir, echoserver string) (Built, error) {
	s, err := EchoServerSpec(echoserver)
	if err != nil {
		return Built{}, err
	}
	return s.Write(dir, DefaultRegistry, EchoServerTag)
}
