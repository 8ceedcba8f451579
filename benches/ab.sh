#!/usr/bin/env bash
# A/B of actgate binaries against nginx, the way each optimisation step is measured: the proxy
# under test pinned to core 0, wrk -t1 -c64 and an nginx upstream on core 1, contenders
# alternated round by round, medians of ROUNDS rounds. Prints requests/s and the proxy's CPU
# µs per request (user + system time from /proc/<pid>/stat over the run, divided by the
# requests it served), and of that the audit writer thread's share (/proc/<pid>/task).
# WRITER_CPU=1 moves the writer thread to core 1 after start (how much of the audit's cost is
# sharing the proxy's core).
#
#   benches/ab.sh target/release/actgate                      # one binary, audit batched
#   AUDIT=off benches/ab.sh /tmp/actgate-before target/release/actgate
#   ROUNDS=5 DURATION=8 PATH_=/crm/customers/42 benches/ab.sh A B
#   benches/ab.sh target/release/actgate@off target/release/actgate@batched   # modes side by side
#   benches/ab.sh B@off B@batched 'B@batched, flushInterval: 20ms'   # more audit settings after the mode
#   benches/ab.sh B@off B@batched 'B@batched!'   # `!`: the writer thread put under SCHED_BATCH (chrt)
# Beside the medians: each round's CPU µs/request and the median of the rounds' differences
# from the first actgate contender (adjacent runs share the host's state; their difference
# cancels its slow drift, which the difference of two medians does not).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
AUDIT=${AUDIT:-batched}
CONNS=${CONNS:-64}
REQ_PATH=${PATH_:-/crm/customers/42}
EXTRA=${EXTRA:-}
. benches/lib.sh
bench_start nginx wrk
start_nginx_proxy
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
writer_tid() { tid_of "$1" actgate-audit; }
writer_ticks() { local w; w=$(writer_tid "$1"); if [ -n "$w" ]; then awk '{print $14+$15}' "/proc/$1/task/$w/stat"; else echo 0; fi; }
HZ=$(getconf CLK_TCK)

start() { # bin[@audit-mode] port dir -> prints pid; writes dir/token
  local audit=$AUDIT label=${1%!} pid
  [[ $label == *@* ]] && audit=${label#*@}
  pid=$(start_actgate "${label%@*}" "$audit" "$2" "$3")
  if [[ $1 == *! ]]; then
    local w; w=$(writer_tid "$pid")
    # A contender labelled SCHED_BATCH that is not would be measured under a false name.
    if [ -z "$w" ] || ! chrt -b -p 0 "$w"; then kill "$pid"; echo "could not put the writer thread of $1 under SCHED_BATCH" >&2; exit 1; fi
  fi
  echo "$pid"
}

run() { # label url pid token -> "rps cpu_us writer_us"
  local before after out rps wbefore wafter w
  if [[ -n ${WRITER_CPU:-} && $1 != nginx ]]; then w=$(writer_tid "$3"); [ -n "$w" ] && taskset -pc "$WRITER_CPU" "$w" >/dev/null; fi
  before=$(ticks "$3"); wbefore=$(writer_ticks "$3")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" ${4:+-H "Authorization: Bearer $4"} "$2")
  after=$(ticks "$3"); wafter=$(writer_ticks "$3")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$rps $(awk -v t=$((after-before)) -v w=$((wafter-wbefore)) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.1f %.1f", t*1e6/hz/n, w*1e6/hz/n}')"
}

declare -A RPS CPU WCPU
labels=(nginx "$@")
for round in $(seq "$ROUNDS"); do
  for i in "${!labels[@]}"; do
    l=${labels[$i]}
    if [ "$l" = nginx ]; then
      r=$(run nginx "http://$NGX$REQ_PATH" "$NGX_PID" "")
    else
      port=$((18200 + i * 10))
      pid=$(start "$l" "$port" "$WORK/a$i")
      r=$(run "$l" "http://127.0.0.1:$port$REQ_PATH" "$pid" "$(cat "$WORK/a$i/token")")
      kill "$pid"; wait "$pid" 2>/dev/null || true
    fi
    read -r a b c <<<"$r"; RPS[$i]+="$a "; CPU[$i]+="$b "; WCPU[$i]+="$c "
  done
done
ngx=$(echo "${RPS[0]}" | median)
printf "%-40s %12s %9s %11s %13s %9s   (audit %s, %s rounds x %ss, -c%s)\n" contender req/s "vs nginx" "CPU µs/req" "of it writer" "paired Δ" "$AUDIT" "$ROUNDS" "$DURATION" "$CONNS"
for i in "${!labels[@]}"; do
  r=$(echo "${RPS[$i]}" | median); c=$(echo "${CPU[$i]}" | median); w=$(echo "${WCPU[$i]}" | median)
  d="-"; [ "$i" -gt 1 ] && d=$(paired "${CPU[$i]}" "${CPU[1]}" diff)
  printf "%-40s %12s %9.2f %11s %13s %9s   req/s [%s] CPU [%s]\n" "${labels[$i]}" "$r" "$(awk -v a="$r" -v b="$ngx" 'BEGIN{print a/b}')" "$c" "$w" "$d" "${RPS[$i]% }" "${CPU[$i]% }"
done
