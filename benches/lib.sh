# Sourced by the load benches: the nginx processes they all start — the upstream answering a
# small JSON body on 127.0.0.1:18101 (core 1) and, when asked, nginx as a plain reverse proxy
# to it on 127.0.0.1:18102 (core 0) —, an actgate enforcing one route in front of that
# upstream, and their cleanup. Expects WORK (a temporary directory) and PIDS (an array of
# process ids to stop) to be set, or bench_start to set them.
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
NJS_MODULE=/usr/lib/nginx/modules/ngx_http_js_module.so
export PATH="$HOME/.cargo/bin:$PATH"

# The Cerbos policy decision point (the peer stack's PDP): the official binary, which Cerbos
# publishes on npm as a per-platform package, installed under target/ so it is fetched once.
CERBOS_VERSION=0.51.0
BENCH_TOOLS=${BENCH_TOOLS:-$(pwd)/target/bench-tools}
CERBOS_PLATFORM=cerbos-linux-$(uname -m | sed 's/x86_64/x64/; s/aarch64/arm64/')
CERBOS=$BENCH_TOOLS/node_modules/@cerbos/$CERBOS_PLATFORM/$CERBOS_PLATFORM

# Cerbos's Python SDK (its generated protobufs) and grpcio, for the gRPC load client
# (benches/cerbos_grpc_load.py), in a virtualenv under target/ as well.
CERBOS_PY=$BENCH_TOOLS/venv/bin/python
CERBOS_PY_PACKAGES="cerbos==0.16.1 grpcio==1.85.3"

debs_now() { # package... (from Debian, at once)
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Installs what a bench runs and is missing, on a fresh machine: nginx, wrk, njs and valgrind
# from Debian, oha from crates.io (a cargo build: not while another bench is running), cerbos
# from npm.
need_tools() { # nginx wrk oha njs valgrind cerbos cerbos-py ...
  local debs=() t
  for t in "$@"; do
    case $t in
      nginx) command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || debs+=(nginx) ;;
      njs) [ -f "$NJS_MODULE" ] || debs+=(libnginx-mod-http-js) ;;
      oha) command -v oha >/dev/null || { echo "== installing oha (crates.io)" >&2; cargo install oha --locked --quiet; } ;;
      cerbos-py) "$CERBOS_PY" -c 'import cerbos.request.v1.request_pb2, grpc' 2>/dev/null || {
          echo "== installing $CERBOS_PY_PACKAGES (PyPI, into $BENCH_TOOLS/venv)" >&2
          python3 -m venv "$BENCH_TOOLS/venv" 2>/dev/null || { debs_now python3-venv; python3 -m venv "$BENCH_TOOLS/venv"; }
          # shellcheck disable=SC2086
          "$BENCH_TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check $CERBOS_PY_PACKAGES >&2
        } ;;
      cerbos) [ -x "$CERBOS" ] || {
          echo "== installing cerbos $CERBOS_VERSION (npm, into $BENCH_TOOLS)" >&2
          command -v npm >/dev/null || debs_now nodejs npm
          npm install --prefix "$BENCH_TOOLS" --no-audit --no-fund --ignore-scripts --silent "cerbos@$CERBOS_VERSION" >&2
          [ -x "$CERBOS" ] || { echo "npm installed no cerbos binary at $CERBOS" >&2; exit 1; }
        } ;;
      *) command -v "$t" >/dev/null || debs+=("$t") ;;
    esac
  done
  if [ ${#debs[@]} -gt 0 ]; then
    echo "== installing ${debs[*]} (Debian)" >&2
    debs_now "${debs[@]}"
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}
UP=127.0.0.1:18101
NGX=127.0.0.1:18102

nginx_conf() { # dir listen body
  mkdir -p "$1/tmp"
  cat > "$1/nginx.conf" <<NGINX_CONF
worker_processes 1; daemon on; pid $1/nginx.pid; error_log $1/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp; keepalive_requests 1000000;
  upstream backend { server $UP; keepalive 128; }
  server { listen $2 backlog=4096; $3 } }
NGINX_CONF
}

# The upstream, pinned to core 1.
start_upstream() {
  nginx_conf "$WORK/up" "$UP" 'location / { default_type application/json; return 200 "{\"id\":42,\"name\":\"Ada\"}"; }'
  taskset -c 1 "$NGINX" -c "$WORK/up/nginx.conf" -p "$WORK/up" 2>/dev/null
}

# nginx as a plain reverse proxy to the upstream, pinned to core 0; sets NGX_PID (its worker).
start_nginx_proxy() {
  nginx_conf "$WORK/px" "$NGX" 'location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }'
  taskset -c 0 "$NGINX" -c "$WORK/px/nginx.conf" -p "$WORK/px" 2>/dev/null
  sleep 0.3
  NGX_PID=$(pgrep -P "$(cat "$WORK/px/nginx.pid")" | head -1)
}

KEY=bench-api-key-0123456789abcdef-0123456789
KEY_SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)

# actgate BIN with audit AUDIT on ports PORT..PORT+2, pinned to core 0, its data in DIR; one
# allowed route to the upstream. WORKERS sets listen.workers, EXTRA is appended to the
# config. Prints its pid once it is ready; writes a token for the route to DIR/token.
start_actgate() { # bin audit port dir
  local bin=$1 audit=$2 port=$3 dir=$4; mkdir -p "$dir"
  cat > "$dir/c.yaml" <<ACTGATE_CONF
listen: { proxy: 127.0.0.1:$port, api: 127.0.0.1:$((port+1)), admin: 127.0.0.1:$((port+2))${WORKERS:+, workers: $WORKERS} }
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
${EXTRA:-}
ACTGATE_CONF
  rm -rf "$dir/data"
  ACTGATE_LOG=warn taskset -c 0 "$bin" serve --config "$dir/c.yaml" >"$dir/log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$((port+2))/readyz" >/dev/null && break; sleep 0.05; done
  curl -sf -X POST "http://127.0.0.1:$((port+1))/v1/tokens" -H "X-Api-Key: $KEY" -H 'Content-Type: application/json' \
    -d '{"agentId":"agent_bench","expiresIn":3600}' | sed 's/.*"token":"\([^"]*\)".*/\1/' > "$dir/token"
  echo "$pid"
}

# The id of process PID's thread named NAME (its /proc comm), or nothing.
tid_of() { # pid name
  local t; for t in /proc/"$1"/task/*; do [[ $(cat "$t/comm") == "$2" ]] && echo "${t##*/}"; done; true
}

# The common start of a load bench: a temporary WORK directory and the PIDS to stop, both
# cleaned up on exit, the tools it names installed if missing, the upstream running.
bench_start() { # tools...
  WORK=$(mktemp -d)
  PIDS=()
  trap cleanup EXIT
  need_tools "$@"
  start_upstream
}

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for d in up px; do [ -f "$WORK/$d/nginx.pid" ] && kill "$(cat "$WORK/$d/nginx.pid")" 2>/dev/null || true; done
  sleep 0.2; rm -rf "$WORK"
}

# The median of the numbers on stdin (space or newline separated); of an even count, the mean
# of the two middle ones.
median() {
  tr ' ' '\n' | grep -v '^$' | sort -g |
    awk '{a[NR] = $1} END { if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# Two contenders run next to each other in every round: the median of the rounds' own
# differences (or ratios) cancels the host's slow drift, which the difference of two medians
# does not. "a1 a2 ..." "b1 b2 ..." diff|ratio -> the median, 0.1 (diff) or 0.01 (ratio)
# precise; "n/a" when the lists do not pair up round by round.
paired() {
  local a b
  a=$(echo "$1" | tr ' ' '\n' | grep -v '^$' || true); b=$(echo "$2" | tr ' ' '\n' | grep -v '^$' || true)
  if [ -z "$a" ] || [ "$(echo "$a" | wc -l)" != "$(echo "$b" | wc -l)" ]; then echo n/a; return; fi
  local m; m=$(paste <(echo "$a") <(echo "$b") | awk -v op="$3" '{ print (op == "diff") ? $1 - $2 : ($2 > 0 ? $1 / $2 : 0) }' | median)
  if [ "$3" = diff ]; then printf '%.1f\n' "$m"; else printf '%.2f\n' "$m"; fi
}
