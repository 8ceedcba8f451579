#!/usr/bin/env bash
# Where the batched audit's cost lands, thread by thread: actgate with audit off and batched,
# fresh data directory each run, alternating ROUNDS rounds, pinned to core 0 (wrk -t1 -c64 and
# the nginx upstream on core 1). For the proxy worker and the audit writer thread: user and
# system CPU µs per request (/proc/<pid>/task/<tid>/stat) and context switches per 1,000
# requests, voluntary / involuntary (/proc/<pid>/task/<tid>/status).
#
#   benches/threads.sh                              # target/release/actgate, 3 rounds
#   ROUNDS=5 BIN=/tmp/actgate-old benches/threads.sh
#   MODES="batched batched,+flushInterval:+20ms" benches/threads.sh   # `+` for a space: more audit settings
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
BIN=${BIN:-target/release/actgate}
read -ra MODES <<<"${MODES:-off batched}"
. benches/lib.sh
bench_start nginx wrk
HZ=$(getconf CLK_TCK)
snap() { # pid tid -> "utime stime voluntary involuntary"
  echo "$(awk '{print $14, $15}' "/proc/$1/task/$2/stat") $(awk '/^voluntary_ctxt/ {v=$2} /^nonvoluntary_ctxt/ {n=$2} END {print v, n}' "/proc/$1/task/$2/status")"
}
per() { # before... after... requests -> "user/sys µs  vol/invol per 1k"
  awk -v hz="$HZ" -v n="$9" -v u=$(($5 - $1)) -v s=$(($6 - $2)) -v v=$(($7 - $3)) -v i=$(($8 - $4)) \
    'BEGIN { printf "%5.1f / %4.1f   %5.1f / %5.1f", u * 1e6 / hz / n, s * 1e6 / hz / n, v * 1000 / n, i * 1000 / n }'
}
printf '%-28s %-6s %9s   %-13s %-15s   %-13s %s\n' mode round req/s "proxy usr/sys" "switches/1k" "writer usr/sys" "switches/1k"
for round in $(seq "$ROUNDS"); do
  for m in "${!MODES[@]}"; do
    mode=${MODES[$m]}
    dir=$WORK/$m-$round
    pid=$(start_actgate "$BIN" "${mode//+/ }" 18400 "$dir"); PIDS=("$pid")
    p=$(tid_of "$pid" actgate-proxy-0); w=$(tid_of "$pid" actgate-audit)
    read -ra pb <<<"$(snap "$pid" "$p")"
    [ -n "$w" ] && read -ra wb <<<"$(snap "$pid" "$w")"
    out=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" -H "Authorization: Bearer $(cat "$dir/token")" http://127.0.0.1:18400/crm/customers/42)
    read -ra pa <<<"$(snap "$pid" "$p")"
    [ -n "$w" ] && read -ra wa <<<"$(snap "$pid" "$w")"
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    writer="-"
    [ -n "$w" ] && writer=$(per "${wb[@]}" "${wa[@]}" "$n")
    printf '%-28s %-6s %9s   %s   %s\n' "$mode" "$round" "$rps" "$(per "${pb[@]}" "${pa[@]}" "$n")" "$writer"
    kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; rm -rf "$dir"
  done
done
