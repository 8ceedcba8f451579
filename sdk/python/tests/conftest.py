"""Starts the real actgate binary (ACTGATE_BIN, else target/debug/actgate of this repository)
with a temporary config, and a small upstream HTTP server for the proxy tests."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pathlib
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
ADMIN_KEY = "sdk-test-admin-key-0123456789abcdef0123"
ISSUER_KEY = "sdk-test-issuer-key-0123456789abcdef012"


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


class Upstream(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self) -> None:  # noqa: N802
        Upstream.seen.append((self.path, dict(self.headers)))
        body = json.dumps({"id": self.path.rsplit("/", 1)[-1], "name": "Ada"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Gateway:
    def __init__(self, proc: subprocess.Popen, proxy: str, api: str, lines: list[str]) -> None:
        self.proc, self.proxy, self.api, self.lines = proc, proxy, api, lines


@pytest.fixture(scope="session")
def upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def gateway(upstream):
    binary = os.environ.get("ACTGATE_BIN") or str(ROOT / "target" / "debug" / "actgate")
    if not os.path.exists(binary):
        pytest.fail(f"no actgate binary at {binary}: run `cargo build` first (or set ACTGATE_BIN)")
    tmp = tempfile.TemporaryDirectory()
    config = pathlib.Path(tmp.name) / "actgate.yaml"
    config.write_text(f"""
listen: {{ proxy: "127.0.0.1:0", api: "127.0.0.1:0", admin: "127.0.0.1:0" }}
dataDir: {tmp.name}/data
apiKeys:
  - {{ name: admin, sha256: {_sha(ADMIN_KEY)}, role: admin }}
  - {{ name: runner, sha256: {_sha(ISSUER_KEY)}, role: issuer }}
tokens: {{ defaultTtl: 1h, maxTtl: 2h, clockSkew: 1s }}
reload: {{ watch: false }}
upstreams:
  crm: {{ url: "{upstream}", timeout: 5s }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}", rows: {{ fixed: 1 }} }}
""")
    proc = subprocess.Popen(
        [binary, "serve", "--log-format", "json", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ACTGATE_LOG": "info"},
    )
    lines: list[str] = []
    deadline = time.time() + 20
    addrs = None
    assert proc.stderr is not None
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "actgate listening" in line:
            addrs = json.loads(line)
            break
    if addrs is None:
        proc.kill()
        pytest.fail("actgate did not start:\n" + "".join(lines))
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    yield Gateway(proc, f"http://{addrs['proxy']}", f"http://{addrs['api']}", lines)
    proc.terminate()
    proc.wait(timeout=30)
    tmp.cleanup()
