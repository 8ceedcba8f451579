#!/usr/bin/env bash
# /v1/enforce with the embedded SQLite store vs the shared PostgreSQL store, side by side in
# one run: the hot path reads the in-memory snapshot, never the store, so the two should be
# the same within noise. Both actgates pinned to core 0 (audit batched), wrk on core 1,
# ROUNDS alternating rounds, medians reported. Then the revocation propagation across three
# replicas, from tests/replicas.rs (p50/p99 over 20 tokens).
#
#   benches/store-enforce.sh             # ~2 min
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL is not installed: apt-get install postgresql" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 2; }

cargo build --release --quiet
ACTGATE=$(pwd)/target/release/actgate
WORK=$(mktemp -d)
chmod 755 "$WORK"
AS=(); [ "$(id -u)" -eq 0 ] && AS=(runuser -u postgres --)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  "${AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== PostgreSQL (throwaway cluster, core 1)"
mkdir -p "$WORK/pg"; [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg"
"${AS[@]}" "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U actgate --no-sync >/dev/null
"${AS[@]}" taskset -c 1 "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" \
  -o "-p 18099 -k $WORK/pg -c listen_addresses=127.0.0.1" -w start >/dev/null
export ACTGATE_BENCH_PG=postgres://actgate@127.0.0.1:18099/postgres?sslmode=disable

KEY=bench-key-0123456789abcdef
KEY_SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
start() { # name port extra
  local dir="$WORK/$1"; mkdir -p "$dir"
  cat > "$dir/actgate.yaml" <<EOF
listen: { proxy: 127.0.0.1:$2, api: 127.0.0.1:$(($2+1)), admin: 127.0.0.1:$(($2+2)) }
dataDir: $dir/data
apiKeys: [{ name: bench, sha256: $KEY_SHA }]
reload: { watch: false }
policies:
  - { name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow }
$3
EOF
  ACTGATE_LOG=warn taskset -c 0 "$ACTGATE" serve --config "$dir/actgate.yaml" >"$dir/log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$(($2+2))/readyz" >/dev/null && break; sleep 0.05; done
  local agent
  agent=$(curl -sf -X POST "http://127.0.0.1:$(($2+1))/v1/agents" -H "X-Api-Key: $KEY" -H 'Content-Type: application/json' -d '{"name":"bench"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
  curl -sf -X POST "http://127.0.0.1:$(($2+1))/v1/tokens" -H "X-Api-Key: $KEY" -H 'Content-Type: application/json' \
    -d "{\"agentId\":\"$agent\"}" | sed 's/.*"token":"\([^"]*\)".*/\1/' > "$dir/token"
}
start sqlite 18110 ""
start postgres 18120 "store: { postgres: { fromEnv: ACTGATE_BENCH_PG } }"

cat > "$WORK/enforce.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Api-Key"] = "$KEY"
wrk.body = '{"capabilityToken":"' .. os.getenv("WRK_TOKEN") .. '","action":"read","resourceId":"api://crm/customers/42"}'
EOF
declare -A RPS
echo "== /v1/enforce: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds alternating"
for r in $(seq "$ROUNDS"); do
  for c in sqlite postgres; do
    port=$([ $c = sqlite ] && echo 18111 || echo 18121)
    rps=$(WRK_TOKEN=$(cat "$WORK/$c/token") taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$WORK/enforce.lua" \
      "http://127.0.0.1:$port/v1/enforce" | awk '/Requests\/sec/ {print $2}')
    RPS[$c]="${RPS[$c]:-} $rps"
    printf '   round %s %-9s %10s req/s\n' "$r" "$c" "$rps"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
S=$(echo "${RPS[sqlite]}" | median); P=$(echo "${RPS[postgres]}" | median)
echo
echo "| store | /v1/enforce req/s (median) | ratio |"
echo "| --- | --- | --- |"
echo "| SQLite (embedded) | $S | 1.00 |"
echo "| PostgreSQL (shared) | $P | $(awk -v a="$P" -v b="$S" 'BEGIN { printf "%.2f", a / b }') |"

echo
echo "== revocation propagation across three replicas (tests/replicas.rs)"
cargo test --release --quiet --test replicas three_replicas_share_one_truth -- --nocapture 2>&1 \
  | grep -E "revocation propagation|test result" || true
