#!/usr/bin/env bash
# Runs Kubernetes' own network policy e2e tests (the [Feature:NetworkPolicy]
# specs of k8s.io/kubernetes/test/e2e, less those that need SCTP) against a
# cluster, and prints PASS, FAIL or SKIP for each spec (docs/netpol-e2e.md).
#
# Usage: scripts/run-netpol-e2e.sh [--kubeconfig FILE] [--report-dir DIR]
#          [--timeout D] [--focus RE] [--skip RE] [-v] [-- e2e.test flags]
#   KUBECONFIG is used when --kubeconfig is not given. Exits 0 only when no
#   spec failed.
#
# First builds what is not cached yet (scripts/build-kubernetes.sh e2e.test
# agnhost kubectl: about 10 minutes cold on two cores, milliseconds warm)
# and writes the agnhost image archive
# ${TORTIE_CACHE:-/var/cache/tortie}/kubernetes/v1.37.2/images/agnhost.tar,
# registry.k8s.io/e2e-test-images/agnhost:2.66.1, which every node of the
# cluster must have imported (`ctr -n k8s.io images import agnhost.tar`)
# before the run: the tests' pods never pull.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
bash scripts/build-kubernetes.sh e2e.test agnhost kubectl >/dev/null
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
nice -n 19 "$GO" build -o "$tmp/tortie-netpol-e2e" ./internal/cmd/tortie-netpol-e2e
"$tmp/tortie-netpol-e2e" images >&2
"$tmp/tortie-netpol-e2e" run "$@"
