#!/usr/bin/env bash
# Builds Kubernetes binaries from the Go module k8s.io/kubernetes (module proxy
# only, no git, no Docker) and caches them outside the clone, keyed by version:
#
#   ${TORTIE_CACHE:-/var/cache/tortie}/kubernetes/<version>/bin/<binary>
#
# Usage: scripts/build-kubernetes.sh [binary ...]
#   binaries default to kube-apiserver and kubectl (what the Kubernetes API
#   tests need); any of kube-apiserver kube-controller-manager kube-scheduler
#   kubelet kubectl kube-proxy may be named, and two test programs:
#     e2e.test  Kubernetes' end-to-end suite (`go test -c` of
#               k8s.io/kubernetes/test/e2e, with the tags Kubernetes' own
#               build gives it); scripts/run-netpol-e2e.sh runs its
#               [Feature:NetworkPolicy] specs, docs/netpol-e2e.md
#     agnhost   the e2e tests' server and client (test/images/agnhost),
#               static, stamped with the image version the suite of this
#               release expects; pkg/images puts it in an image
#   KUBERNETES_VERSION picks the release (default v1.37.2). Prints the bin
#   directory on its last line.
#
# Idempotent: a binary already in the cache, stamped with the version, is left
# alone, so a warm machine pays a few milliseconds. Cold, kube-apiserver takes
# 10-30 minutes on two cores (the build is niced so other work goes on);
# e2e.test about 8 and agnhost 2 from an empty Go build cache.
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
	case "$b" in kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kubectl|kube-proxy|e2e.test|agnhost) ;;
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
# The scratch module's tools.go names every package built here; one written
# before e2e.test and agnhost could be named lacks them (and their modules),
# so it is written anew and tidied again.
if [ ! -f go.sum ] || [ ! -f .tidy.done ] || ! grep -q '"k8s.io/kubernetes/test/images/agnhost"' tools.go; then
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
	pkgs=()
	for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy; do
		pkgs+=("k8s.io/kubernetes/cmd/$c")
	done
	pkgs+=(k8s.io/kubernetes/test/e2e k8s.io/kubernetes/test/images/agnhost)
	# go mod tidy keeps what the module's own packages and their tests
	# import, not what a dependency's tests import: e2e.test is the test of
	# k8s.io/kubernetes/test/e2e, so its test files' imports are named too.
	while read -r p; do
		case "${p%%/*}" in *.*) pkgs+=("$p") ;; esac # not the standard library
	done < <(GOFLAGS=-mod=mod nice -n 19 "$GO" list -e -f '{{join .TestImports "\n"}}{{"\n"}}{{join .XTestImports "\n"}}' k8s.io/kubernetes/test/e2e)
	{
		printf '//go:build tools\n\npackage tools\n\nimport (\n'
		printf '%s\n' "${pkgs[@]}" | sort -u | sed 's/.*/\t_ "&"/'
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
	case "$b" in
	e2e.test)
		# As hack/lib/golang.sh builds it: `go test -c`, tags selinux,notest
		# (no fuzzing helpers) and grpcnotrace (what a non-debug build gets).
		CGO_ENABLED=0 GOFLAGS= nice -n 19 "$GO" test -c -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$CACHE/bin/$b.tmp" k8s.io/kubernetes/test/e2e
		;;
	agnhost)
		# Stamped with the version test/images/agnhost/VERSION gives the
		# image; that file and porter's certificate and key, which the
		# image adds, go to share/agnhost for pkg/images.
		adir="$(GOFLAGS= "$GO" list -f '{{.Dir}}' k8s.io/kubernetes/test/images/agnhost)"
		av="$(cat "$adir/VERSION")"
		CGO_ENABLED=0 GOFLAGS= nice -n 19 "$GO" build -trimpath -ldflags "-s -w -X main.Version=$av" -o "$CACHE/bin/$b.tmp" k8s.io/kubernetes/test/images/agnhost
		mkdir -p "$CACHE/share/agnhost"
		install -m 0644 "$adir/VERSION" "$adir/porter/localhost.crt" "$adir/porter/localhost.key" "$CACHE/share/agnhost/"
		;;
	*)
		CGO_ENABLED=0 GOFLAGS= nice -n 19 "$GO" build -trimpath -ldflags "$ld" -o "$CACHE/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b"
		;;
	esac
	mv "$CACHE/bin/$b.tmp" "$CACHE/bin/$b"
	touch "$CACHE/bin/.$b.done"
	echo "build-kubernetes: $b $V built in $(($(date +%s) - s)) s" >&2
done
echo "$CACHE/bin"
