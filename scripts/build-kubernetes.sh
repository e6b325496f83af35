#!/usr/bin/env bash
# Builds Kubernetes binaries from the Go module k8s.io/kubernetes (module proxy
# only, no git, no Docker) and caches them outside the clone, keyed by version:
#
#   ${TORTIE_CACHE:-/var/cache/tortie}/kubernetes/<version>/bin/<binary>
#
# Usage: scripts/build-kubernetes.sh [binary ...]
#   binaries default to kube-apiserver and kubectl (what the Kubernetes API
#   tests need); any of kube-apiserver kube-controller-manager kube-scheduler
#   kubelet kubectl kube-proxy may be named. KUBERNETES_VERSION picks the
#   release (default v1.37.2). Prints the bin directory on its last line.
#
# Idempotent: a binary already in the cache, stamped with the version, is left
# alone, so a warm machine pays a few milliseconds. Cold, kube-apiserver takes
# 10-30 minutes on two cores (the build is niced so other work goes on).
set -euo pipefail

V="${KUBERNETES_VERSION:-v1.37.2}"
case "$V" in v1.*.*) ;; *) echo "build-kubernetes: KUBERNETES_VERSION=$V: want v1.MINOR.PATCH" >&2; exit 2 ;; esac
SV="v0.${V#v1.}"            # staging modules: v1.37.2 -> v0.37.2
MINOR="$(echo "$V" | cut -d. -f2)"
CACHE="${TORTIE_CACHE:-/var/cache/tortie}/kubernetes/$V"
GO="${GO:-go}"
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=(kube-apiserver kubectl)
for b in "${BINS[@]}"; do
	case "$b" in kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kubectl|kube-proxy) ;;
	*) echo "build-kubernetes: unknown binary $b" >&2; exit 2 ;; esac
done

todo=()
for b in "${BINS[@]}"; do
	[ -x "$CACHE/bin/$b" ] && [ -f "$CACHE/bin/.$b.done" ] || todo+=("$b")
done
if [ ${#todo[@]} -eq 0 ]; then
	echo "$CACHE/bin"
	exit 0
fi

mkdir -p "$CACHE/bin" "$CACHE/src"
# One builder at a time per version: a second caller waits for the first.
exec 9>"$CACHE/.lock"
flock 9
src="$CACHE/src"
cd "$src"
if [ ! -f go.sum ] || [ ! -f .tidy.done ]; then
	echo "build-kubernetes: resolving k8s.io/kubernetes@$V" >&2
	mod="$(GOFLAGS=-mod=mod nice -n 19 "$GO" mod download -json "k8s.io/kubernetes@$V" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
	[ -f "$mod" ] || { echo "build-kubernetes: could not download k8s.io/kubernetes@$V" >&2; exit 1; }
	gover="$(sed -n 's/^go \(.*\)/\1/p' "$mod")"
	# k8s.io/kubernetes's own go.mod replaces its staging modules with local
	# paths; pin each to the matching published version instead.
	{
		printf 'module tortie.local/kubernetes-build\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$gover" "$V"
		sed -n '/^replace (/,/^)/p' "$mod" | grep '=>' | awk -v v="$SV" '{print "\t"$1" => "$1" "v}'
		printf ')\n'
	} >go.mod
	{
		printf '//go:build tools\n\npackage tools\n\nimport (\n'
		for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy; do
			printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"
		done
		printf ')\n'
	} >tools.go
	GOFLAGS=-mod=mod nice -n 19 "$GO" mod tidy
	touch .tidy.done
fi
ld="-s -w -X k8s.io/component-base/version.gitVersion=$V -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$V -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$MINOR"
for b in "${todo[@]}"; do
	[ -x "$CACHE/bin/$b" ] && [ -f "$CACHE/bin/.$b.done" ] && continue
	s=$(date +%s)
	echo "build-kubernetes: building $b $V (cold: minutes)" >&2
	CGO_ENABLED=0 GOFLAGS= nice -n 19 "$GO" build -trimpath -ldflags "$ld" -o "$CACHE/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b"
	mv "$CACHE/bin/$b.tmp" "$CACHE/bin/$b"
	touch "$CACHE/bin/.$b.done"
	echo "build-kubernetes: $b $V built in $(($(date +%s) - s)) s" >&2
done
echo "$CACHE/bin"
