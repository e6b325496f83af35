#!/usr/bin/env bash
# Reruns tortie's benchmarks and prints one table. Go micro-benchmarks run
# with `go test -bench`; the CLI benchmarks drive the real binary against the
# embedded datastore and, side by side, a stock Debian etcd (128 operations
# per transaction, so a large manifest goes in chunks).
set -euo pipefail
cd "$(dirname "$0")/.."
TORTIE=${TORTIE:-bin/tortie}
N=${N:-10000}
work=$(mktemp -d /tmp/tortie-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Every Go benchmark of the project, each with the iteration count its
# number in docs/benchmarks.md was measured with. Those marked root set up
# network namespaces (and skip without root).
gobench() { # packages... -- flags...
  local pkgs=() flags=()
  while [ "$1" != "--" ]; do pkgs+=("$1"); shift; done; shift
  flags=("$@")
  go test -run NONE -benchmem "${flags[@]}" "${pkgs[@]}" | tee -a "$work/go.txt" | grep -E '^(Benchmark|ok|FAIL)' || true
}
echo "== Go benchmarks"
gobench ./pkg/selector ./pkg/datastore ./pkg/client -- -bench . -benchtime 2s
gobench ./pkg/calc -- -bench 'ColdLoad$|Update'
gobench ./pkg/node -- -bench ColdStart -benchtime 3x
gobench ./pkg/ipam -- -bench . -benchtime 2000x
gobench ./pkg/dataplane/nft -- -bench 'PolicyChange$' -benchtime 20x
if [ "$(id -u)" -eq 0 ]; then
  gobench ./pkg/cni -- -bench AddDel -benchtime 100x
  gobench ./pkg/dataplane/routes -- -bench Apply -benchtime 10x
  gobench ./pkg/routing -- -bench Throughput -benchtime 20000x
  gobench ./pkg/bgp -- -bench StartToRoute -benchtime 3x
else
  echo "(root benchmarks skipped: cni, routes, routing, bgp need root)"
fi

echo "== generating $N GlobalNetworkPolicies"
python3 - "$N" >"$work/policies.yaml" <<'PY'
import sys
n = int(sys.argv[1])
for i in range(n):
    print(f"""---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: bench-{i:05d}
spec:
  order: {i}
  selector: app == 'app-{i % 97}' && tier in {{'web', 'api'}}
  ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: role == 'client-{i % 13}'
        nets: [10.{i // 256 % 256}.{i % 256}.0/24]
      destination:
        ports: [80, 443, "8000:8099"]
  egress:
    - action: Allow
      protocol: UDP
      destination:
        ports: [53]""")
PY

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_embedded() {
  "$TORTIE" datastore serve --data-dir "$work/embedded" --listen-client http://127.0.0.1:0 >"$work/embedded.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q "serving on" "$work/embedded.log" && break; sleep 0.1; done
  sed -n 's/.*serving on \([^ ]*\).*/\1/p' "$work/embedded.log"
}

start_debian_etcd() {
  local cport pport
  cport=$(free_port); pport=$(free_port)
  /usr/bin/etcd --name bench --data-dir "$work/debian" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "bench=http://127.0.0.1:$pport" >"$work/debian.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$cport" endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
  echo "http://127.0.0.1:$cport"
}

store_revision() {
  ETCDCTL_API=3 etcdctl --endpoints "$1" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])'
}

now() { date +%s.%N; }

measure() { # endpoint -> "apply_s txns get_s"
  local ep=$1 r0 r1 t0 t1 t2
  export ETCD_ENDPOINTS=$ep
  "$TORTIE" apply -f - >/dev/null <<<'{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"warmup"},"spec":{"nets":["10.0.0.0/8"]}}'
  r0=$(store_revision "$ep")
  t0=$(now)
  "$TORTIE" apply -f "$work/policies.yaml" >/dev/null
  t1=$(now)
  r1=$(store_revision "$ep")
  "$TORTIE" get globalnetworkpolicies -o yaml >"$work/out.yaml"
  t2=$(now)
  [ "$(grep -c '^  kind: GlobalNetworkPolicy' "$work/out.yaml")" -eq "$N" ] || { echo "bench: get returned the wrong count" >&2; exit 1; }
  echo "$(python3 -c "print($t1 - $t0)") $((r1 - r0)) $(python3 -c "print($t2 - $t1)")"
}

echo "== CLI: apply and get $N policies"
emb=$(start_embedded)
read -r ea et eg < <(measure "$emb")
deb=$(start_debian_etcd)
read -r da dt dg < <(measure "$deb")

printf '\n| benchmark | tortie datastore serve (embedded etcd 3.7) | Debian etcd 3.4, stock limits |\n|---|---|---|\n'
printf '| `tortie apply -f` %d policies, seconds | %.2f | %.2f |\n' "$N" "$ea" "$da"
printf '| etcd transactions for that apply | %d | %d |\n' "$et" "$dt"
printf '| `tortie get gnp -o yaml` %d policies, seconds | %.2f | %.2f |\n' "$N" "$eg" "$dg"
printf '\n| Go benchmark | ns/op | MB/s | B/op | allocs/op | other |\n|---|---|---|---|---|---|\n'
awk '/^Benchmark/ { ns=""; mb=""; b=""; a=""; o=""; for (i=3;i<=NF;i++) { u=$(i); if (u=="ns/op") ns=$(i-1); else if (u=="MB/s") mb=$(i-1); else if (u=="B/op") b=$(i-1); else if (u=="allocs/op") a=$(i-1); else if (u ~ /[a-z]\/|\/[a-z]|_/ && $(i-1) ~ /^[0-9.]+$/) o=o " " $(i-1) " " u } printf "| %s | %s | %s | %s | %s |%s |\n", $1, ns, mb, b, a, o }' "$work/go.txt"

# Policy end to end (issue 5): the real tortie-node in network namespaces of
# its own, the real CLI, real TCP. Needs root; prints its own table.
echo
echo "== policy: connections/s with 10,000 rules, change to enforcement, apply, cold start (go run ./bench/policy)"
if [ "$(id -u)" -eq 0 ]; then
  pflags=${POLICY_BENCH_FLAGS:-}
  [ "$N" -lt 10000 ] && [ -z "$pflags" ] && pflags=-quick
  # shellcheck disable=SC2086
  go run ./bench/policy -tortie "$TORTIE" $pflags
else
  echo "(skipped: needs root)"
fi

# Flow logs (issue 16): connections/s with them off, on and with totals;
# accounting at 5,000 connections/s; memory with the ring full.
echo
echo "== flow logs: connections/s off / on / with totals, accounting, memory (go run ./bench/policy -flows)"
if [ "$(id -u)" -eq 0 ]; then
  fflags=
  [ "$N" -lt 10000 ] && fflags=-quick
  # shellcheck disable=SC2086
  go run ./bench/policy -flows $fflags
else
  echo "(skipped: needs root)"
fi

# Scale (issue 18): IPAM in a burst (10,000 pods over 100 nodes by 100
# concurrent callers), agents direct to etcd beside agents through
# tortie-typha, and (as root) addresses moving between the hosts of a lab.
# The route reflector section (-sections rr: 200 clients, ~10 minutes and
# ~18 GB) is left to be run on its own.
echo
echo "== scale: IPAM in a burst, typha fan-out, address moves (go run ./bench/scale)"
sections=ipam,typha
[ "$(id -u)" -eq 0 ] && sections=ipam,typha,moves
if [ "$N" -lt 10000 ]; then
  go run ./bench/scale -sections "$sections" -pods 1000 -nodes 10 -callers 10 -typha-agents 50 -moves 10
else
  go run ./bench/scale -sections "$sections"
fi

# WireGuard (issue 17): a two-host lab without and with encryption: one TCP
# stream, connections/s, the agents' CPU.
echo
echo "== encryption: plain vs WireGuard between two hosts (go run ./bench/wireguard)"
if [ "$(id -u)" -eq 0 ]; then
  if [ "$N" -lt 10000 ]; then
    go run ./bench/wireguard -duration 3s
  else
    go run ./bench/wireguard
  fi
else
  echo "(skipped: needs root)"
fi

# Kubernetes (issue 13): kubectl apply / kubectl label → enforced on a
# --kube-api lab, beside the same change written as the Calico resource.
echo
echo "== kubernetes: kubectl apply and kubectl label pod to enforcement (go run ./bench/kube)"
if [ "$(id -u)" -eq 0 ]; then
  go run ./bench/kube -bin-dir "$(dirname "$TORTIE")"
else
  echo "(skipped: needs root)"
fi
