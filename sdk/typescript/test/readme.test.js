// The README's snippets (sdk/typescript/README.md), run as written: tests/sdk.rs checks that
// every line of its code blocks is in this file.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { Client, TokenSource } from "actgate";
import { Denied } from "actgate";
import { guardedExecute } from "actgate";
import { ADMIN_KEY, startGateway, startUpstream } from "./gateway.js";

let gw, up;
after(async () => {
  await gw?.stop();
  up?.close();
});

test("the README quick start", async () => {
  up = await startUpstream();
  gw = await startGateway(up.url);
  const api = gw.api;
  process.env.ACTGATE_API_KEY = ADMIN_KEY;
  const setup = new Client(api);
  await setup.createPolicy({ name: "readme reads", actions: ["read"], resources: ["api://crm/customers/*"], effect: "allow", constraints: { maxRows: 100 } });

  const client = new Client(api, { apiKey: process.env.ACTGATE_API_KEY });
  const agent = await client.createAgent({ name: "Customer Support Assistant" });
  const tokens = new TokenSource(client, agent.id, { ttl: 900 });

  const d = await client.validate(await tokens.token(), "read", "api://crm/customers/42", { rows: 1 });
  d.allowed; d.reason; d.message; d.policyId; d.obligations;
  assert.equal(d.allowed, true);
  assert.deepEqual(d.obligations, { maxRows: 100 });
  await assert.rejects(async () => {
    await client.require(await tokens.token(), "delete", "api://crm/customers/42");
  }, Denied);

  const execute = guardedExecute(client, { action: "send_email", resource: "api://email/outbound", context: (a) => ({ to: [a.to] }) }, async (a) => `sent to ${a.to}`);
  const out = await execute({ to: "bob@yourcompany.com" }, { context: { token: await tokens.token() } });
  assert.match(out, /denied by actgate \(no_matching_policy\)/);
});
