#!/usr/bin/env bash
# The stack's floor, in one run: nginx as a plain reverse proxy, a bare hyper proxy doing
# nothing but forwarding (benches/floor/bare_proxy.rs, with hyper-util's pooled client as
# actgate has it, and with each downstream connection owning and driving its upstream
# connection), and actgate enforcing with audit off and batched. Every proxy pinned to core 0,
# wrk -t1 -c64 and an nginx upstream on core 1, contenders alternated round by round, medians
# of ROUNDS rounds. CPU per request is split into user and system time (/proc/<pid>/stat).
#
#   benches/stack-floor.sh                  # builds the release binaries first
#   ROUNDS=5 DURATION=8 benches/stack-floor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
cargo build --release --quiet --bin actgate --example bare-proxy
ACTGATE=${ACTGATE:-target/release/actgate}
BARE=target/release/examples/bare-proxy
. benches/lib.sh
bench_start nginx wrk
start_nginx_proxy
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
export WORKERS=1

start_bare() { # mode port -> pid
  taskset -c 0 "$BARE" "127.0.0.1:$2" "$UP" "$1" 1 >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/" >/dev/null && break; sleep 0.05; done
  echo "$pid"
}

run() { # url pid token -> "rps user_us sys_us"
  local before after out
  before=$(ticks "$2")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" ${3:+-H "Authorization: Bearer $3"} "$1")
  after=$(ticks "$2")
  local rps reqs
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  awk -v r="$rps" -v b="$before" -v a="$after" -v hz="$HZ" -v n="$reqs" 'BEGIN {
    split(b, x, " "); split(a, y, " ");
    printf "%s %.1f %.1f", r, (y[1]-x[1])*1e6/hz/n, (y[2]-x[2])*1e6/hz/n }'
}

labels=(nginx bare-legacy bare-owned actgate-off actgate-batched)
declare -A RPS USR SYS
for round in $(seq "$ROUNDS"); do
  for i in "${!labels[@]}"; do
    l=${labels[$i]}
    port=$((18400 + i * 10))
    case $l in
      nginx) r=$(run "http://$NGX/crm/customers/42" "$NGX_PID" "") ;;
      bare-*) pid=$(start_bare "${l#bare-}" "$port")
              r=$(run "http://127.0.0.1:$port/crm/customers/42" "$pid" "")
              kill "$pid"; wait "$pid" 2>/dev/null || true ;;
      actgate-*) pid=$(start_actgate "$ACTGATE" "${l#actgate-}" "$port" "$WORK/a$i")
                 r=$(run "http://127.0.0.1:$port/crm/customers/42" "$pid" "$(cat "$WORK/a$i/token")")
                 kill "$pid"; wait "$pid" 2>/dev/null || true ;;
    esac
    read -r rps usr sys <<<"$r"
    RPS[$i]+="$rps "; USR[$i]+="$usr "; SYS[$i]+="$sys "
  done
done
ngx=$(echo "${RPS[0]}" | median)
printf "%-16s %10s %9s %9s %9s %9s   (%s rounds x %ss, wrk -t1 -c64, proxy pinned to one core)\n" \
  contender req/s "vs nginx" "user µs" "sys µs" "CPU µs" "$ROUNDS" "$DURATION"
for i in "${!labels[@]}"; do
  r=$(echo "${RPS[$i]}" | median); u=$(echo "${USR[$i]}" | median); s=$(echo "${SYS[$i]}" | median)
  printf "%-16s %10s %9.2f %9s %9s %9.1f   [%s]\n" "${labels[$i]}" "$r" \
    "$(awk -v a="$r" -v b="$ngx" 'BEGIN{print a/b}')" "$u" "$s" "$(awk -v a="$u" -v b="$s" 'BEGIN{print a+b}')" "${RPS[$i]}"
done
