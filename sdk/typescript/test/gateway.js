// Starts the real actgate binary (ACTGATE_BIN, else target/debug/actgate of this repository)
// with a temporary config, plus a small upstream for the proxy tests.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

export const ADMIN_KEY = "ts-sdk-admin-key-0123456789abcdef0123456";
export const ISSUER_KEY = "ts-sdk-issuer-key-0123456789abcdef012345";
const sha = (s) => createHash("sha256").update(s).digest("hex");
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export async function startUpstream() {
  const seen = [];
  const server = createServer((req, res) => {
    seen.push({ path: req.url, headers: req.headers });
    const body = JSON.stringify({ id: req.url.split("/").pop(), name: "Ada" });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, seen, close: () => server.close() };
}

export async function startGateway(upstreamUrl) {
  const bin = process.env.ACTGATE_BIN || join(root, "target", "debug", "actgate");
  if (!existsSync(bin)) throw new Error(`no actgate binary at ${bin}: run cargo build first (or set ACTGATE_BIN)`);
  const dir = mkdtempSync(join(tmpdir(), "actgate-ts-"));
  const config = join(dir, "actgate.yaml");
  writeFileSync(
    config,
    `
listen: { proxy: "127.0.0.1:0", api: "127.0.0.1:0", admin: "127.0.0.1:0" }
dataDir: ${dir}/data
apiKeys:
  - { name: admin, sha256: ${sha(ADMIN_KEY)}, role: admin }
  - { name: runner, sha256: ${sha(ISSUER_KEY)}, role: issuer }
tokens: { defaultTtl: 1h, maxTtl: 2h, clockSkew: 1s }
reload: { watch: false }
upstreams:
  crm: { url: "${upstreamUrl}", timeout: 5s }
routes:
  - { name: get-customer, method: GET, path: "/crm/customers/{id}", upstream: crm, action: read, resource: "api://crm/customers/{id}", rows: { fixed: 1 } }
`,
  );
  const child = spawn(bin, ["serve", "--log-format", "json", "--config", config], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, ACTGATE_LOG: "info" },
  });
  const lines = [];
  const addrs = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("actgate did not start:\n" + lines.join("\n"))), 20000);
    const rl = createInterface({ input: child.stderr });
    rl.on("line", (line) => {
      lines.push(line);
      if (line.includes("actgate listening")) {
        clearTimeout(timer);
        resolve(JSON.parse(line));
      }
    });
    child.on("exit", (code) => reject(new Error(`actgate exited (${code}):\n` + lines.join("\n"))));
  });
  return {
    api: `http://${addrs.api}`,
    proxy: `http://${addrs.proxy}`,
    lines,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
