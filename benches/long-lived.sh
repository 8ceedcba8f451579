#!/usr/bin/env bash
# One gateway kept running while its audit log grows: N consecutive wrk runs (-t1 -c64, 10 s)
# against the same actgate (pinned to core 0; wrk and the nginx upstream on core 1), each
# reported with its requests/s, the proxy's CPU µs per request and the data directory's size.
# Answers whether a long-lived gateway slows down as its log and index grow.
#
#   benches/long-lived.sh                          # target/release/actgate, audit batched, 6 runs
#   N=10 MODE=strict BIN=/tmp/actgate-old benches/long-lived.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
bench_start nginx wrk
pid=$(start_actgate "${BIN:-target/release/actgate}" "${MODE:-batched}" 18400 "$WORK/a"); PIDS=("$pid")
tok=$(cat "$WORK/a/token")
HZ=$(getconf CLK_TCK)
for i in $(seq "${N:-6}"); do
  before=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$(taskset -c 1 wrk -t1 -c64 -d10s -H "Authorization: Bearer $tok" http://127.0.0.1:18400/crm/customers/42)
  after=$(awk '{print $14+$15}' "/proc/$pid/stat")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  printf 'run %2d  %9s req/s  %5s µs/request  data %5s MB\n' "$i" \
    "$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')" \
    "$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')" \
    "$(du -sm "$WORK/a/data" | cut -f1)"
done
