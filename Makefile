# tortie: the two commands a newcomer needs, in a root shell, are `make demo` and
# `make test` (a non-root user runs `sudo make demo` and `sudo make test`).
GO      ?= go
BIN     := bin
GOFLAGS ?=
export GOFLAGS

.PHONY: all build deps demo test check bench clean

all: build

# The binaries carry the commit they were built from (`tortie version`,
# `tortie-node --version`): VCS stamping on whatever GOFLAGS says, unless git
# cannot read this checkout (no git, not a checkout, a checkout git refuses
# as another user's), where the build goes on without it.
BUILDVCS ?= $(shell git status --porcelain >/dev/null 2>&1 && echo -buildvcs=auto || echo -buildvcs=false)

#
# They are static (CGO_ENABLED=0; no tortie package uses cgo, only the
# standard library's optional resolver): no dynamic loader and libc at each
# start, which is 2-5 ms of every `tortie apply` (docs/benchmarks.md).
build:
	CGO_ENABLED=0 $(GO) build $(BUILDVCS) -o $(BIN)/tortie ./cmd/tortie
	CGO_ENABLED=0 $(GO) build $(BUILDVCS) -o $(BIN)/tortie-node ./cmd/tortie-node
	CGO_ENABLED=0 $(GO) build $(BUILDVCS) -o $(BIN)/tortie-cni ./cmd/tortie-cni
	CGO_ENABLED=0 $(GO) build $(BUILDVCS) -o $(BIN)/tortie-datastore ./cmd/tortie-datastore
	CGO_ENABLED=0 $(GO) build $(BUILDVCS) -o $(BIN)/tortie-kube-controllers ./cmd/tortie-kube-controllers
	CGO_ENABLED=0 $(GO) build $(BUILDVCS) -o $(BIN)/tortie-typha ./cmd/tortie-typha

# Container images for Kubernetes (deploy/tortie.yaml, docs/kubernetes.md),
# without Docker or the network: the programs built static into bin/static,
# then OCI archives bin/images/{node,cni,kube-controllers}.tar, named
# docker.io/tortie/<name>:$(IMAGE_TAG), and the lab's test images
# pause.tar and echoserver.tar (pkg/images). On each node:
# `ctr -n k8s.io images import bin/images/*.tar`. The tag is the version,
# never latest, so that imagePullPolicy IfNotPresent uses the import.
IMAGE_TAG ?= v0.1.0-dev

.PHONY: images
images:
	$(GO) run ./internal/cmd/tortie-images --build --goflags '$(BUILDVCS)' --bin $(BIN)/static --out $(BIN)/images --tag $(IMAGE_TAG)

# Debian packages the tests and demo need (etcd-server for a real cluster,
# nftables, iproute2, bird2), then Go-built test tools (cnitool, host-local)
# into ./bin, and kube-apiserver and kubectl (Kubernetes v1.37.2, built from
# source by scripts/build-kubernetes.sh into ${TORTIE_CACHE:-/var/cache/tortie};
# 20-40 minutes the first time on two cores). Installs only what is missing:
# on a warm machine it costs well under a second.
deps:
	bash scripts/install-deps.sh
	bash scripts/install-tools.sh

demo: deps build
	bash scripts/demo.sh

# gofmt and go vet first: a formatting or vet problem fails the build like a test.
check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: deps check
	$(GO) test -count=1 -timeout 50m ./...

bench: deps build
	bash scripts/bench.sh

clean:
	rm -rf $(BIN)
