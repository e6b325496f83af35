#!/usr/bin/env bash
# Installs the Debian packages tortie's build, demo and tests need. Idempotent:
# packages already present are skipped, so a warm machine pays nothing.
set -euo pipefail

PACKAGES=(
  etcd-server   # a real multi-member etcd cluster for datastore tests (etcd 3.4, Debian 12)
  etcd-client   # etcdctl, to read what tortie wrote exactly as Calico's tools would
  iproute2      # ip netns, veth: kernel tests
  nftables      # the nft binary knftables drives
  bird2         # a real BGP peer (top-of-rack router) for BGP tests
  containerd    # ctr images import of make images' archives (pkg/images tests, a private containerd)
  runc          # the OCI runtime containerd runs pods with (pkg/kube/node: real kubelets)
  chromium      # a real headless browser for the flow web view's test (pkg/flowui)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]} (run: sudo make deps)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian's etcd-server and bird2 packages enable system services; tortie's tests and
# demo bring their own, so keep the packaged one out of the way.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now etcd.service bird.service >/dev/null 2>&1 || true
fi
