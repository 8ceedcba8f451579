#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 30) and prints one line per target with its
# execution count. Needs cargo-fuzz; on a stable toolchain RUSTC_BOOTSTRAP=1 enables the
# sanitizer flags cargo-fuzz passes.
#   fuzz/run.sh 30          # the smoke run CI does
#   fuzz/run.sh 600         # the 10-minute runs recorded in SECURITY.md
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-30}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
cargo fuzz build -O >/dev/null 2>&1 || cargo fuzz build -O
for target in $(cargo fuzz list); do
  log=$(mktemp)
  if ! cargo fuzz run -O "$target" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    echo "FAIL $target"; tail -40 "$log"; exit 1
  fi
  execs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  echo "ok   $target: ${SECONDS_EACH}s, ${execs:-?} executions, coverage ${cov:-?}, 0 crashes"
  rm -f "$log"
done
