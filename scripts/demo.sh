#!/usr/bin/env bash
# tortie's demo: a three-host cluster on this machine (`tortie lab`), with
# workloads in two namespaces made by the real CNI plugin; the connectivity
# matrix before and after applying examples/lab/policy.yaml; then the lab is
# taken down, whatever happened (the EXIT trap).
set -euo pipefail
cd "$(dirname "$0")/.."
TORTIE=${TORTIE:-bin/tortie}
LAB=${LAB:-tortie-demo}

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

if [ "$(id -u)" != 0 ]; then
  echo "demo: the lab makes network namespaces: run it as root (sudo make demo)" >&2
  exit 1
fi

work=$(mktemp -d /tmp/tortie-demo.XXXXXX)
cleanup() {
  if "$TORTIE" lab list 2>/dev/null | grep -qx "$LAB"; then
    say "$TORTIE lab down --name $LAB"
    "$TORTIE" lab down --name "$LAB" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A lab of this name left by an interrupted demo goes first.
if "$TORTIE" lab list 2>/dev/null | grep -qx "$LAB"; then
  "$TORTIE" lab down --name "$LAB"
fi

run "$TORTIE" lab up --name "$LAB" --hosts 3
run "$TORTIE" lab workload add web    --name "$LAB" --host h1 --namespace shop  --labels app=web
run "$TORTIE" lab workload add db     --name "$LAB" --host h2 --namespace shop  --labels app=db
run "$TORTIE" lab workload add client --name "$LAB" --host h3 --namespace other --labels app=client
run "$TORTIE" lab workload add batch  --name "$LAB" --host h1 --namespace other --labels app=batch
run "$TORTIE" lab status --name "$LAB"

say "$TORTIE lab matrix --name $LAB --ports 80,81   # every workload to every other, before any policy"
"$TORTIE" lab matrix --name "$LAB" --ports 80,81 | tee "$work/before.txt"

# Other commands reach the lab's datastore without flags when the lab could
# write the CLI's config file (it leaves one it did not write alone).
cfg=()
if ! grep -qs "for lab $LAB;" /etc/tortie/tortie.cfg; then
  cfg=(--config "/run/tortie/lab/$LAB/tortie.cfg")
fi
say "cat examples/lab/policy.yaml"
cat examples/lab/policy.yaml
run "$TORTIE" "${cfg[@]}" apply -f examples/lab/policy.yaml
run "$TORTIE" "${cfg[@]}" get networkpolicies -n shop -o wide
sleep 1 # the agents enforce within milliseconds; a second is plenty

say "$TORTIE lab matrix --name $LAB --ports 80,81   # the same, with the policy"
"$TORTIE" lab matrix --name "$LAB" --ports 80,81 | tee "$work/after.txt"
printf '\n\033[1mWhat the policy changed (< before, > after):\033[0m\n'
diff "$work/before.txt" "$work/after.txt" || true

say "$TORTIE lab probe --name $LAB other/client shop/db --port 80   # exit 1: blocked"
"$TORTIE" lab probe --name "$LAB" other/client shop/db --port 80 || echo "(exit status $?)"
run "$TORTIE" lab probe --name "$LAB" shop/web shop/db --port 80

printf '\ndemo done: the lab is taken down now.\n'
