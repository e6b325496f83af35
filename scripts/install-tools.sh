#!/usr/bin/env bash
# Installs the Go-built tools the tests use into the repository's ./bin:
#   cnitool     CNI's own command-line runtime (an independent CNI client)
#   host-local  the reference IPAM plugin (tortie-cni must work with it)
#   bridge, loopback  reference plugins: pod networking of pkg/kube/node's tests
# and, through scripts/build-kubernetes.sh, the Kubernetes binaries the tests
# run (kube-apiserver, kubectl, kube-controller-manager, kube-scheduler,
# kubelet, kube-proxy, and Kubernetes' e2e.test with its agnhost) into the
# Kubernetes cache outside the clone (pkg/kube/apiserver finds them there;
# TORTIE_KUBERNETES_BIN points elsewhere instead).
# Idempotent: a tool already built at the pinned version is left alone, so a
# second run takes well under a second. The first Kubernetes build takes
# 20-40 minutes on two cores (about 10 of them e2e.test and agnhost).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="$(pwd)/bin"
GO="${GO:-go}"
mkdir -p "$BIN"

# name  package@version
TOOLS=(
	"cnitool github.com/containernetworking/cni/cnitool@v1.3.1"
	"host-local github.com/containernetworking/plugins/plugins/ipam/host-local@v1.9.1"
	"bridge github.com/containernetworking/plugins/plugins/main/bridge@v1.9.1"
	"loopback github.com/containernetworking/plugins/plugins/main/loopback@v1.9.1"
)

for entry in "${TOOLS[@]}"; do
	name="${entry%% *}"
	pkgver="${entry#* }"
	pkg="${pkgver%@*}"
	ver="${pkgver#*@}"
	if [ -x "$BIN/$name" ] && "$GO" version -m "$BIN/$name" 2>/dev/null |
		awk -v p="$pkg" -v v="$ver" '$1 == "path" && $2 == p { path = 1 } $1 == "mod" && $3 == v { mod = 1 } END { exit !(path && mod) }'; then
		continue
	fi
	echo "install-tools: building $name ($pkgver) into $BIN"
	# Outside the module: go install pkg@version ignores tortie's go.mod.
	(cd / && GOFLAGS= GOBIN="$BIN" "$GO" install "$pkgver")
done

# The real Kubernetes the tests run against: the API server (pkg/kube/kubetest),
# the control plane and nodes (pkg/kube/node), Kubernetes' own e2e tests
# (internal/cmd/tortie-netpol-e2e, pkg/images' agnhost).
if [ -z "${TORTIE_KUBERNETES_BIN:-}" ]; then
	GO="$GO" bash scripts/build-kubernetes.sh kube-apiserver kubectl kube-controller-manager \
		kube-scheduler kubelet kube-proxy e2e.test agnhost >/dev/null
fi
