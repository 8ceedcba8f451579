#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: deterministic (two runs
# agree within 0.1%), so an A/B of a small change is readable on this noisy shared machine
# where CPU time per request moves by ±2 µs between runs. Kernel work is not counted (use
# benches/ab.sh or benches/stack-floor.sh for time). Installs valgrind, nginx (Debian) and oha
# (crates.io) if missing.
# Valgrind does not emulate SHA-NI: with the audit on, sha2 runs its portable code here, ~36,700
# instructions per request (the 651-byte line's 11 blocks) that the hardware does in ~0.45 µs —
# two builds still compare exactly, but the hash's share is overstated.
#
#   benches/instructions.sh target/release/actgate [OTHER_BIN...]     # audit off
#   AUDIT=batched benches/instructions.sh target/release/actgate
#   KEEP=/tmp/cg.out AUDIT=batched benches/instructions.sh BIN   # keep the profile for callgrind_annotate
#   EXTRA="tokens: { cacheCapacity: 0 }" benches/instructions.sh BIN   # appended to the config
#   MODE=owned benches/instructions.sh target/release/examples/bare-proxy
set -euo pipefail
N=${N:-3000}
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
PIDS=()
. benches/lib.sh
trap cleanup EXIT
need_tools nginx oha valgrind
start_upstream
W=$WORK
for bin in "$@"; do
  H=()
  if [[ $bin == *bare-proxy ]]; then
    valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" "$bin" 127.0.0.1:18300 "$UP" "${MODE:-legacy}" 1 2>"$W/vg.log" &
    pid=$!; PIDS=("$pid")
    for _ in $(seq 400); do curl -sf http://127.0.0.1:18300/ >/dev/null && break; sleep 0.1; done
  else
    mkdir -p "$W/a"
    cat > "$W/a/c.yaml" <<Y
listen: { proxy: 127.0.0.1:18300, api: 127.0.0.1:18301, admin: 127.0.0.1:18302, workers: 1 }
dataDir: $W/a/data
apiKeys: [{ name: bench, sha256: $KEY_SHA }]
agents: [{ id: agent_bench, name: Bench }]
reload: { watch: false }
audit: { durability: ${AUDIT:-off} }
upstreams: { crm: { url: "http://$UP", timeout: 10s } }
routes:
  - { name: get-customer, method: GET, path: "/crm/customers/{id}", upstream: crm, action: read, resource: "api://crm/customers/{id}", rows: { fixed: 1 } }
policies:
  - { name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow, constraints: { maxRows: 100 } }
${EXTRA:-}
Y
    rm -rf "$W/a/data"
    ACTGATE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" "$bin" serve --config "$W/a/c.yaml" >"$W/a/log" 2>"$W/vg.log" &
    pid=$!; PIDS=("$pid")
    for _ in $(seq 600); do curl -sf http://127.0.0.1:18302/readyz >/dev/null && break; sleep 0.1; done
    T=$(curl -sf -X POST http://127.0.0.1:18301/v1/tokens -H "X-Api-Key: $KEY" -H 'Content-Type: application/json' \
      -d '{"agentId":"agent_bench","expiresIn":3600}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
    H=(-H "Authorization: Bearer $T")
  fi
  oha --no-tui -n 500 -c 8 "${H[@]}" http://127.0.0.1:18300/crm/customers/42 >/dev/null   # warm up
  callgrind_control -z "$pid" >/dev/null
  oha --no-tui -n "$N" -c 8 "${H[@]}" http://127.0.0.1:18300/crm/customers/42 >"$W/oha.txt"
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  ok=$(awk '/\[200\]/ {print $2}' "$W/oha.txt")
  ir=$(callgrind_annotate "$(ls -t "$W"/cg.out* | head -1)" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  [[ -n ${KEEP:-} ]] && cp "$(ls -t "$W"/cg.out* | head -1)" "$KEEP"
  printf "%-40s %8s ok of %s  %8.0f instructions/request\n" "$bin" "$ok" "$N" "$(awk -v a="$ir" -v n="$N" 'BEGIN{print a/n}')"
  kill "$pid"; wait "$pid" 2>/dev/null || true; PIDS=()
  rm -f "$W"/cg.out*
done
