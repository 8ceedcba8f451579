#!/usr/bin/env bash
# actgate under load, side by side with nginx, on one machine, in one run.
#
#   benches/proxy-load.sh            # full run (~8 min), prints the table, writes target/BENCHMARKS.latest.md
#                                    # (BENCHMARKS.md holds a curated run with its reading)
#   QUICK=1 benches/proxy-load.sh    # 3 s runs, 1 round (smoke)
#
# Contenders, alternated run by run (ROUNDS rounds, the median is reported):
#   direct          wrk → upstream (nginx returning a small JSON body)
#   nginx           wrk → nginx reverse proxy (1 worker, keep-alive upstream, no access log) → upstream
#   actgate         wrk → actgate enforcing (warm token cache, audit batched) → upstream
#   actgate-noaudit actgate enforcing with audit.durability off
#   actgate-nocache actgate with tokens.cacheCapacity 0: every request verifies its token (0% hits)
#   actgate-deny    actgate refusing (403) by an explicit deny; nothing forwarded
# The proxy under test is pinned to core 0 (taskset), load generator and upstream to core 1.
# Then: open-loop latency (oha, --latency-correction) at half of nginx's peak rate for
# direct, nginx and actgate; idle and peak RSS; and a flood of distinct forged tokens beside
# valid traffic (memory stays flat, valid traffic keeps flowing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=${QUICK:-}
DURATION=${DURATION:-$([ -n "$QUICK" ] && echo 3 || echo 10)}
ROUNDS=${ROUNDS:-$([ -n "$QUICK" ] && echo 1 || echo 3)}
CONNS=${CONNS:-64}
PROXY_CPU=${PROXY_CPU:-0}
OTHER_CPU=${OTHER_CPU:-1}

need() { command -v "$1" >/dev/null 2>&1; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! need nginx || ! need wrk; then
  echo "== installing nginx and wrk (Debian)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx wrk >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! need oha; then
  echo "== installing oha (crates.io)"
  cargo install oha --locked --quiet
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "== building actgate (release)"
cargo build --release --quiet
ACTGATE="$ROOT/target/release/actgate"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/up/nginx.pid" ] && kill "$(cat "$WORK/up/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/px/nginx.pid" ] && kill "$(cat "$WORK/px/nginx.pid")" 2>/dev/null || true
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT

UP=127.0.0.1:18001
NGX=127.0.0.1:18002

nginx_conf() { # dir listen body
  mkdir -p "$1/tmp"
  cat > "$1/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;
  keepalive_requests 1000000;
  upstream backend { server $UP; keepalive 128; }
  server {
    listen $2 backlog=4096;
    $3
  }
}
EOF
}

echo "== starting upstream (nginx, core $OTHER_CPU) and nginx proxy (core $PROXY_CPU)"
nginx_conf "$WORK/up" "$UP" 'location / { default_type application/json; return 200 "{\"id\":42,\"name\":\"Ada\"}"; }'
taskset -c "$OTHER_CPU" "$NGINX" -c "$WORK/up/nginx.conf" -p "$WORK/up" 2>/dev/null
nginx_conf "$WORK/px" "$NGX" 'location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }'
taskset -c "$PROXY_CPU" "$NGINX" -c "$WORK/px/nginx.conf" -p "$WORK/px" 2>/dev/null
sleep 0.5
NGX_PID=$(pgrep -P "$(cat "$WORK/px/nginx.pid")" | head -1)
[ -n "$NGX_PID" ] || NGX_PID=$(cat "$WORK/px/nginx.pid")

KEY=bench-key-0123456789abcdef
KEY_SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)

start_actgate() { # name port-base extra-yaml
  local dir="$WORK/$1"; mkdir -p "$dir"
  cat > "$dir/actgate.yaml" <<EOF
listen: { proxy: 127.0.0.1:$2, api: 127.0.0.1:$(($2+1)), admin: 127.0.0.1:$(($2+2)) }
dataDir: $dir/data
apiKeys: [{ name: bench, sha256: $KEY_SHA }]
reload: { watch: false }
upstreams: { crm: { url: "http://$UP", timeout: 10s } }
routes:
  - { name: get-customer, method: GET, path: "/crm/customers/{id}", upstream: crm, action: read, resource: "api://crm/customers/{id}", rows: { fixed: 1 } }
  - { name: delete-customer, method: DELETE, path: "/crm/customers/{id}", upstream: crm, action: delete, resource: "api://crm/customers/{id}" }
policies:
  - { name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow, constraints: { maxRows: 100 } }
  - { name: never delete, actions: [delete], resources: ["api://crm/**"], effect: deny }
$3
EOF
  ACTGATE_LOG=warn taskset -c "$PROXY_CPU" "$ACTGATE" serve --config "$dir/actgate.yaml" >"$dir/log" 2>&1 &
  local pid=$!; PIDS+=("$pid"); echo "$pid" > "$dir/pid"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$(($2+2))/readyz" >/dev/null && break; sleep 0.05; done
  local agent
  agent=$(curl -sf -X POST "http://127.0.0.1:$(($2+1))/v1/agents" -H "X-Api-Key: $KEY" -H 'Content-Type: application/json' -d '{"name":"bench"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
  curl -sf -X POST "http://127.0.0.1:$(($2+1))/v1/tokens" -H "X-Api-Key: $KEY" -H 'Content-Type: application/json' \
    -d "{\"agentId\":\"$agent\",\"expiresIn\":3600}" | sed 's/.*"token":"\([^"]*\)".*/\1/' > "$dir/token"
}

echo "== starting actgate instances (core $PROXY_CPU)"
start_actgate actgate 18010 ""
start_actgate noaudit 18020 "audit: { durability: off }"
start_actgate nocache 18030 "tokens: { cacheCapacity: 0 }"
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
IDLE_RSS=$(rss_kib "$(cat "$WORK/actgate/pid")")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# contender → "url method pid token"
target() {
  case $1 in
    direct) echo "http://$UP/crm/customers/42 GET - -" ;;
    nginx) echo "http://$NGX/crm/customers/42 GET $NGX_PID -" ;;
    actgate) echo "http://127.0.0.1:18010/crm/customers/42 GET $(cat "$WORK/actgate/pid") $(cat "$WORK/actgate/token")" ;;
    actgate-noaudit) echo "http://127.0.0.1:18020/crm/customers/42 GET $(cat "$WORK/noaudit/pid") $(cat "$WORK/noaudit/token")" ;;
    actgate-nocache) echo "http://127.0.0.1:18030/crm/customers/42 GET $(cat "$WORK/nocache/pid") $(cat "$WORK/nocache/token")" ;;
    actgate-deny) echo "http://127.0.0.1:18010/crm/customers/42 DELETE $(cat "$WORK/actgate/pid") $(cat "$WORK/actgate/token")" ;;
  esac
}

cat > "$WORK/method.lua" <<'EOF'
wrk.method = os.getenv("WRK_METHOD") or "GET"
EOF

run_wrk() { # contender → "rps cpu_us_per_req"
  read -r url method pid token < <(target "$1")
  local before=0 after=0 out
  [ "$pid" != "-" ] && before=$(cpu_ticks "$pid")
  local hdr=()
  [ "$token" != "-" ] && hdr=(-H "Authorization: Bearer $token")
  out=$(WRK_METHOD=$method taskset -c "$OTHER_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/method.lua" \
        "${hdr[@]}" "$url" 2>&1)
  [ "$pid" != "-" ] && after=$(cpu_ticks "$pid")
  local rps reqs
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}' || true)
  if [ "$1" != actgate-deny ] && [ -n "$non2xx" ]; then echo "warning: $1 had $non2xx non-2xx responses" >&2; fi
  local cpu="-"
  if [ "$pid" != "-" ] && [ "${reqs:-0}" -gt 0 ]; then
    cpu=$(awk -v t=$((after - before)) -v n="$reqs" 'BEGIN { printf "%.1f", t * 10000 / n }')  # ticks of 10 ms → µs
  fi
  echo "$rps $cpu"
}

CONTENDERS=(direct nginx actgate actgate-noaudit actgate-nocache actgate-deny)
declare -A RPS CPU
echo "== throughput: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds, contenders alternating"
for r in $(seq "$ROUNDS"); do
  for c in "${CONTENDERS[@]}"; do
    read -r rps cpu < <(run_wrk "$c")
    RPS[$c]="${RPS[$c]:-} $rps"; CPU[$c]="${CPU[$c]:-} $cpu"
    printf '   round %s %-16s %10s req/s  %6s µs CPU/req\n' "$r" "$c" "$rps" "$cpu"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A MRPS MCPU
for c in "${CONTENDERS[@]}"; do
  MRPS[$c]=$(echo "${RPS[$c]}" | median)
  MCPU[$c]=$(echo "${CPU[$c]}" | median)
done

NGINX_PEAK=${MRPS[nginx]}
RATE=$(awk -v p="$NGINX_PEAK" 'BEGIN { printf "%d", p / 2 }')
RATE2=$(awk -v p="${MRPS[actgate]}" 'BEGIN { printf "%d", p / 2 }')
declare -A P50 P99 P999
latency() { # tag rate contender...
  local tag=$1 rate=$2; shift 2
  echo "== latency ($tag): oha open loop at $rate req/s, ${DURATION}s, --latency-correction"
  for c in "$@"; do
    read -r url method pid token < <(target "$c")
    hdr=(); [ "$token" != "-" ] && hdr=(-H "Authorization: Bearer $token")
    json=$(taskset -c "$OTHER_CPU" oha -z "${DURATION}s" -q "$rate" -c "$CONNS" --latency-correction --no-tui --output-format json "${hdr[@]}" "$url" 2>/dev/null)
    P50[$tag$c]=$(echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin)["latencyPercentiles"]; print("%.0f" % (d["p50"]*1e6))')
    P99[$tag$c]=$(echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin)["latencyPercentiles"]; print("%.0f" % (d["p99"]*1e6))')
    P999[$tag$c]=$(echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin)["latencyPercentiles"]; print("%.0f" % (d["p99.9"]*1e6))')
    printf '   %-8s p50 %8s µs  p99 %8s µs  p99.9 %8s µs\n' "$c" "${P50[$tag$c]}" "${P99[$tag$c]}" "${P999[$tag$c]}"
  done
}
latency nginxhalf "$RATE" direct nginx actgate
latency actgatehalf "$RATE2" direct nginx actgate

echo "== forged-token flood beside valid traffic (${DURATION}s)"
PID=$(cat "$WORK/actgate/pid"); TOKEN=$(cat "$WORK/actgate/token")
RSS_BEFORE_FLOOD=$(rss_kib "$PID")
# Worst case: each forged token is the real one with 16 characters of its payload changed,
# so it keeps the gateway's key id and a well-formed signature, and costs a full Ed25519
# verification (an unknown kid or a malformed token is refused before any signature work).
cat > "$WORK/forged.lua" <<LUA
local n = 0
local real = "$TOKEN"
request = function()
  n = n + 1
  local t = real:sub(1, 30) .. string.format("%08d%08d", math.random(0, 99999999), n % 100000000) .. real:sub(47)
  return wrk.format("GET", "/crm/customers/42", { ["Authorization"] = "Bearer " .. t })
end
LUA
taskset -c "$OTHER_CPU" wrk -t1 -c32 -d"${DURATION}s" -s "$WORK/forged.lua" "http://127.0.0.1:18010" >"$WORK/flood.out" 2>&1 &
FLOOD=$!
VALID_OUT=$(taskset -c "$OTHER_CPU" wrk -t1 -c32 -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18010/crm/customers/42" 2>&1)
wait $FLOOD || true
FLOOD_RPS=$(awk '/Requests\/sec/ {print $2}' "$WORK/flood.out")
VALID_RPS=$(echo "$VALID_OUT" | awk '/Requests\/sec/ {print $2}')
RSS_AFTER_FLOOD=$(rss_kib "$PID")
PEAK_RSS=$(hwm_kib "$PID")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
TABLE=$(
  echo "| contender | requests/s | vs nginx | proxy CPU µs/request |"
  echo "|---|---:|---:|---:|"
  for c in "${CONTENDERS[@]}"; do
    echo "| $c | ${MRPS[$c]} | $(ratio "${MRPS[$c]}" "$NGINX_PEAK") | ${MCPU[$c]} |"
  done
  echo
  for tag in nginxhalf actgatehalf; do
    if [ $tag = nginxhalf ]; then
      echo "Open loop at $RATE req/s (half of nginx's peak), oha --latency-correction, ${DURATION}s:"
    else
      echo "Open loop at $RATE2 req/s (half of actgate's own peak), oha --latency-correction, ${DURATION}s:"
    fi
    echo
    echo "| path | p50 µs | p99 µs | p99.9 µs | added p99 vs direct µs |"
    echo "|---|---:|---:|---:|---:|"
    for c in direct nginx actgate; do
      echo "| $c | ${P50[$tag$c]} | ${P99[$tag$c]} | ${P999[$tag$c]} | $(( ${P99[$tag$c]} - ${P99[${tag}direct]} )) |"
    done
    echo
  done
  echo
  echo "| memory and floods | value |"
  echo "|---|---:|"
  echo "| actgate RSS idle (after start, token issued) | $((IDLE_RSS / 1024)) MiB |"
  echo "| actgate peak RSS over the whole run | $((PEAK_RSS / 1024)) MiB |"
  echo "| RSS before / after a ${DURATION}s forged-token flood | $((RSS_BEFORE_FLOOD / 1024)) / $((RSS_AFTER_FLOOD / 1024)) MiB |"
  echo "| forged tokens (real key id, bad signature) refused during the flood | $FLOOD_RPS req/s |"
  echo "| valid requests served during the flood | $VALID_RPS req/s |"
  echo "| 0%-cache-hit / warm throughput | $(ratio "${MRPS[actgate-nocache]}" "${MRPS[actgate]}") |"
)
echo
echo "$TABLE"
{
  echo "# actgate benchmarks"
  echo
  echo "Generated by \`benches/proxy-load.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -r))."
  echo "Proxy under test pinned to core $PROXY_CPU; wrk/oha and the upstream nginx on core $OTHER_CPU."
  echo "wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds alternating the contenders, medians shown."
  echo
  echo "$TABLE"
} > "$WORK/BENCHMARKS.part"
cp "$WORK/BENCHMARKS.part" "$ROOT/target/BENCHMARKS.latest.md"
echo
echo "(table also written to target/BENCHMARKS.latest.md)"
