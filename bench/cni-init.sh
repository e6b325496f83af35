#!/usr/bin/env bash
# What every CNI call pays before the plugin does anything: the process start
# of tortie-cni, as `tortie-cni --version` under GODEBUG=inittrace=1. Prints
# the median over RUNS runs of the package-init total (count, summed clock,
# bytes, allocations, and when the last init ends, counted from the runtime's
# start), of the whole process (wall and user+sys CPU; with perf, also a
# second run without inittrace: task-clock and page faults), and the
# packages with the most init time.
#
#   bench/cni-init.sh                      # builds ./cmd/tortie-cni
#   bench/cni-init.sh -n 200 before=OLD after=NEW
#                                          # two binaries (NAME=PATH names a
#                                          # column), runs alternated so both
#                                          # see the same machine load
set -euo pipefail
cd "$(dirname "$0")/.."
runs=100
top=15
while [ $# -gt 0 ]; do
  case "$1" in
  -n) runs=$2; shift 2 ;;
  -top) top=$2; shift 2 ;;
  -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
  *) break ;;
  esac
done
work=$(mktemp -d /tmp/tortie-cni-init.XXXXXX)
trap 'rm -rf "$work"' EXIT
bins=() names=()
for a in "$@"; do
  case "$a" in
  *=*) names+=("${a%%=*}"); bins+=("${a#*=}") ;;
  *) names+=("binary${#bins[@]}"); bins+=("$a") ;;
  esac
done
if [ ${#bins[@]} -eq 0 ]; then
  go build -o "$work/tortie-cni" ./cmd/tortie-cni
  bins=("$work/tortie-cni") names=(tortie-cni)
fi

echo "load: $(uptime | sed 's/.*load average/load average/')  cores: $(nproc)  runs: $runs"
perf=
if command -v perf >/dev/null && perf stat -o /dev/null true 2>/dev/null; then perf=1; fi
TIMEFORMAT='%3R %3U %3S'
for ((r = 0; r < runs; r++)); do
  for i in "${!bins[@]}"; do
    t=$({ time GODEBUG=inittrace=1 "${bins[$i]}" --version >/dev/null 2>"$work/trace"; } 2>&1)
    # init <pkg> @<start> ms, <clock> ms clock, <bytes> bytes, <allocs> allocs
    awk -v b="$i" -v t="$t" '
      /^init / { n++; c += $5; by += $8; al += $10; e = substr($3, 2) + $5; if (e > end) end = e
                 print b, "pkg", $2, $5 > "/dev/stderr" }
      END { split(t, w, " ")
            print b, "1-inits", n; print b, "2-clock", c; print b, "3-end", end
            print b, "4-bytes", by; print b, "5-allocs", al
            print b, "6-wall", w[1] * 1000; print b, "7-cpu", (w[2] + w[3]) * 1000 }
    ' "$work/trace" >>"$work/sum" 2>>"$work/pkg"
    if [ -n "$perf" ]; then
      perf stat -x, -o "$work/perf" -e task-clock,page-faults "${bins[$i]}" --version >/dev/null 2>&1
      awk -F, -v b="$i" '$3 == "task-clock" { print b, "8-task", $1 } $3 == "page-faults" { print b, "9-faults", $1 }' "$work/perf" >>"$work/sum"
    fi
  done
done

# median of the values of each (binary, key): "bin key value" lines in, "bin key median" out
median() {
  sort -k1,1n -k2,2 -k3,3g | awk '
    function flush() { if (n) print kb, kk, v[int((n - 1) / 2) + 1]; n = 0 }
    { if ($1 != kb || $2 != kk) { flush(); kb = $1; kk = $2 } v[++n] = $3 }
    END { flush() }'
}
median <"$work/sum" >"$work/sum.med"
awk '{ print $1, $3, $4 }' "$work/pkg" | median >"$work/pkg.med"

header() {
  printf '%-56s' "$1"
  for i in "${!bins[@]}"; do printf ' %12s' "${names[$i]}"; done
  echo
}
echo
for i in "${!bins[@]}"; do echo "${names[$i]}: ${bins[$i]}"; done
header "median of $runs runs"
awk -v nb=${#bins[@]} '
  { v[$2, $1] = $3; keys[$2] = 1 }
  END {
    nk = split("1-inits 2-clock 3-end 4-bytes 5-allocs 6-wall 7-cpu 8-task 9-faults", order, " ")
    name["1-inits"] = "package inits"; name["2-clock"] = "init clock, summed (ms)"
    name["3-end"] = "last init ends (ms after runtime start)"; name["4-bytes"] = "init bytes allocated"
    name["5-allocs"] = "init allocations"; name["6-wall"] = "process wall, --version (ms)"
    name["7-cpu"] = "process CPU user+sys (ms)"
    name["8-task"] = "perf: task-clock, no inittrace (ms)"; name["9-faults"] = "perf: page faults"
    for (k = 1; k <= nk; k++) {
      if (!((order[k], 0) in v)) continue
      printf "%-56s", name[order[k]]
      for (i = 0; i < nb; i++) printf " %12s", v[order[k], i]
      print ""
    }
  }' "$work/sum.med"
echo
header "top $top packages by init clock (ms, median)"
awk -v nb=${#bins[@]} '
  { v[$2, $1] = $3; if ($3 > m[$2]) m[$2] = $3 }
  END {
    for (p in m) { line = sprintf("%-56s", p); for (i = 0; i < nb; i++) line = line sprintf(" %12s", ((p, i) in v) ? v[p, i] : "-"); print m[p], line }
  }' "$work/pkg.med" | sort -k1,1gr | head -n "$top" | cut -d' ' -f2-
