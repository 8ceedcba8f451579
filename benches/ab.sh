#!/usr/bin/env bash
# A/B of actgate binaries against nginx, the way each optimisation step is measured: the proxy
# under test pinned to core 0, wrk -t1 -c64 and an nginx upstream on core 1, contenders
# alternated round by round, medians of ROUNDS rounds. Prints requests/s and the proxy's CPU
# µs per request (user + system time from /proc/<pid>/stat over the run, divided by the
# requests it served).
#
#   benches/ab.sh target/release/actgate                      # one binary, audit batched
#   AUDIT=off benches/ab.sh /tmp/actgate-before target/release/actgate
#   ROUNDS=5 DURATION=8 PATH_=/crm/customers/42 benches/ab.sh A B
#   benches/ab.sh target/release/actgate@off target/release/actgate@batched   # modes side by side
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
AUDIT=${AUDIT:-batched}
CONNS=${CONNS:-64}
REQ_PATH=${PATH_:-/crm/customers/42}
EXTRA=${EXTRA:-}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  for d in up px; do [ -f "$WORK/$d/nginx.pid" ] && kill "$(cat "$WORK/$d/nginx.pid")" 2>/dev/null || true; done
  sleep 0.2; rm -rf "$WORK"
}
trap cleanup EXIT
UP=127.0.0.1:18101
NGX=127.0.0.1:18102
conf() { # dir listen body
  mkdir -p "$1/tmp"
  cat > "$1/nginx.conf" <<EOF
worker_processes 1; daemon on; pid $1/nginx.pid; error_log $1/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp; keepalive_requests 1000000;
  upstream backend { server $UP; keepalive 128; }
  server { listen $2 backlog=4096; $3 } }
EOF
}
conf "$WORK/up" "$UP" 'location / { default_type application/json; return 200 "{\"id\":42,\"name\":\"Ada\"}"; }'
taskset -c 1 "$NGINX" -c "$WORK/up/nginx.conf" -p "$WORK/up" 2>/dev/null
conf "$WORK/px" "$NGX" 'location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }'
taskset -c 0 "$NGINX" -c "$WORK/px/nginx.conf" -p "$WORK/px" 2>/dev/null
sleep 0.3
NGX_PID=$(pgrep -P "$(cat "$WORK/px/nginx.pid")" | head -1)
KEY=ab-bench-key-0123456789abcdef-0123456789
KEY_SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

start() { # bin[@audit-mode] port dir -> prints pid; writes dir/token
  local bin=${1%@*} port=$2 dir=$3 audit=$AUDIT; mkdir -p "$dir"
  [[ $1 == *@* ]] && audit=${1#*@}
  cat > "$dir/c.yaml" <<EOF
listen: { proxy: 127.0.0.1:$port, api: 127.0.0.1:$((port+1)), admin: 127.0.0.1:$((port+2)) }
dataDir: $dir/data
apiKeys: [{ name: bench, sha256: $KEY_SHA }]
agents: [{ id: agent_bench, name: Bench }]
reload: { watch: false }
audit: { durability: $audit }
upstreams: { crm: { url: "http://$UP", timeout: 10s } }
routes:
  - { name: get-customer, method: GET, path: "/crm/customers/{id}", upstream: crm, action: read, resource: "api://crm/customers/{id}", rows: { fixed: 1 } }
policies:
  - { name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow, constraints: { maxRows: 100 } }
$EXTRA
EOF
  rm -rf "$dir/data"
  ACTGATE_LOG=warn taskset -c 0 "$bin" serve --config "$dir/c.yaml" >"$dir/log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$((port+2))/readyz" >/dev/null && break; sleep 0.05; done
  curl -sf -X POST "http://127.0.0.1:$((port+1))/v1/tokens" -H "X-Api-Key: $KEY" -H 'Content-Type: application/json' \
    -d '{"agentId":"agent_bench","expiresIn":3600}' | sed 's/.*"token":"\([^"]*\)".*/\1/' > "$dir/token"
  echo "$pid"
}

run() { # label url pid token -> "rps cpu_us"
  local before after out rps
  before=$(ticks "$3")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" ${4:+-H "Authorization: Bearer $4"} "$2")
  after=$(ticks "$3")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$rps $(awk -v t=$((after-before)) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.1f", t*1e6/hz/n}')"
}

declare -A RPS CPU
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
    RPS[$i]+="${r% *} "; CPU[$i]+="${r#* } "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
ngx=$(echo "${RPS[0]}" | median)
printf "%-40s %12s %9s %14s   (audit %s, %s rounds x %ss, -c%s)\n" contender req/s "vs nginx" "CPU µs/req" "$AUDIT" "$ROUNDS" "$DURATION" "$CONNS"
for i in "${!labels[@]}"; do
  r=$(echo "${RPS[$i]}" | median); c=$(echo "${CPU[$i]}" | median)
  printf "%-40s %12s %9.2f %14s   [%s]\n" "${labels[$i]}" "$r" "$(awk -v a="$r" -v b="$ngx" 'BEGIN{print a/b}')" "$c" "${RPS[$i]}"
done
