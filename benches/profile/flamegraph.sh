#!/usr/bin/env bash
# Flame graphs of a running gate under load: `perf record` (software clock, DWARF call
# graphs, so the release build needs no frame pointers) while wrk drives one route, folded
# and drawn by inferno (`cargo install inferno`).
#
# Usage: benches/profile/flamegraph.sh <gate pid> <url> <out.svg> [seconds] [wrk args...]
# e.g.   benches/profile/flamegraph.sh "$(pgrep -f 'sessiongate --config')" \
#          http://127.0.0.1:8080/public/data benches/results/flame-public.svg 8
#        benches/profile/flamegraph.sh "$pid" http://127.0.0.1:8080/api/data \
#          benches/results/flame-auth.svg 8 -H "Cookie: connect.sid=..."
set -euo pipefail
pid=$1 url=$2 out=$3 secs=${4:-8}
shift $(( $# >= 4 ? 4 : 3 ))
for tool in perf wrk inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { echo "flamegraph.sh: $tool is not installed" >&2; exit 2; }
done
data=$(mktemp --suffix=.perf)
trap 'rm -f "$data"' EXIT
# Load first, then sample the steady state.
wrk -t1 -c32 -d$((secs + 3))s "$@" "$url" >/dev/null &
load=$!
sleep 2
perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$pid" -o "$data" -- sleep "$secs"
wait "$load"
perf script -i "$data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph \
  --title "sessiongate: $(basename "$out" .svg), wrk -t1 -c32" --width 1600 > "$out"
echo "wrote $out"
