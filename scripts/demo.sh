#!/usr/bin/env bash
# tortie's demo, until the multi-host lab exists: start an embedded
# datastore, apply the manifests in examples/, show them the way calicoctl
# would, and show that a manifest with one bad document writes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
TORTIE=${TORTIE:-bin/tortie}

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

work=$(mktemp -d /tmp/tortie-demo.XXXXXX)
ds_pid=""
cleanup() {
  [ -n "$ds_pid" ] && kill "$ds_pid" 2>/dev/null && wait "$ds_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Port 0: the datastore picks a free loopback port and says which, so the
# demo never collides with another etcd on this machine.
say "$TORTIE datastore serve --data-dir $work/etcd --listen-client http://127.0.0.1:0 &"
"$TORTIE" datastore serve --data-dir "$work/etcd" --listen-client http://127.0.0.1:0 >"$work/datastore.log" 2>&1 &
ds_pid=$!
for _ in $(seq 100); do
  grep -q "serving on" "$work/datastore.log" 2>/dev/null && break
  kill -0 "$ds_pid" 2>/dev/null || { cat "$work/datastore.log" >&2; exit 1; }
  sleep 0.1
done
export ETCD_ENDPOINTS=$(sed -n 's/.*serving on \([^ ]*\).*/\1/p' "$work/datastore.log")
[ -n "$ETCD_ENDPOINTS" ] || { echo "demo: the datastore did not start:" >&2; cat "$work/datastore.log" >&2; exit 1; }
cat "$work/datastore.log"

run "$TORTIE" apply -f examples/
run "$TORTIE" get ippools -o wide
run "$TORTIE" get tiers
run "$TORTIE" get globalnetworkpolicies -o wide
run "$TORTIE" get networkpolicies -n shop -o wide
run "$TORTIE" get bgppeers
run "$TORTIE" get hostendpoints -o wide
run "$TORTIE" get gnp security.allow-dns -o yaml

cat >"$work/bad.yaml" <<'YAML'
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: good-set
spec:
  nets: [192.0.2.0/24]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: bad-ports
  namespace: shop
spec:
  selector: app == 'web'
  ingress:
    - action: Allow
      protocol: TCP
      destination:
        ports: ["90:80"]
YAML
say "$TORTIE apply -f bad.yaml   # one good document, one bad: nothing is written"
cat "$work/bad.yaml"
if "$TORTIE" apply -f "$work/bad.yaml"; then echo "demo: the bad manifest was accepted" >&2; exit 1; fi
say "$TORTIE get globalnetworksets   # good-set was not written"
"$TORTIE" get globalnetworksets
printf '\nThe data is stored exactly as Calico stores it; look with etcdctl:\n'
run env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" get --prefix /calico/resources/v3/projectcalico.org/ippools/
printf '\ndemo done: the datastore is stopped and its files removed.\n'
