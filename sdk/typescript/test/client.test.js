// The TypeScript client against the real actgate binary (no mocks of actgate).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as actgate from "../index.js";
import { ADMIN_KEY, ISSUER_KEY, startGateway, startUpstream } from "./gateway.js";

let gw, up, admin;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  up = await startUpstream();
  gw = await startGateway(up.url);
  admin = new actgate.Client(gw.api, { apiKey: ADMIN_KEY });
});
after(async () => {
  await gw?.stop();
  up?.close();
});

async function setup() {
  const agent = await admin.createAgent({ name: "Customer Support Assistant", metadata: { openai_assistant_id: "asst_abc123" } });
  const tag = agent.id.slice(-8);
  const allow = await admin.createPolicy({
    name: `Support Reads Customers ${tag}`,
    agents: [agent.id],
    actions: ["read", "list"],
    resources: ["api://crm/customers/*"],
    effect: "allow",
    constraints: { maxRows: 100 },
  });
  const deny = await admin.createPolicy({
    name: `Never Delete ${tag}`,
    agents: [agent.id],
    actions: ["delete"],
    resources: ["api://crm/**"],
    effect: "deny",
  });
  return { agent, allow, deny };
}

test("every call", async () => {
  const { agent, allow, deny } = await setup();
  assert.deepEqual((await admin.getAgent(agent.id)).metadata, { openai_assistant_id: "asst_abc123" });
  assert.ok((await admin.listAgents()).some((a) => a.id === agent.id));
  const ids = (await admin.listPolicies()).map((p) => p.id);
  assert.ok(ids.includes(allow.id) && ids.includes(deny.id));
  const tok = await admin.issueToken(agent.id, { expiresIn: 600 });
  assert.match(tok.token, /^v4\.public\./);
  const { inspect } = await import("node:util");
  assert.ok(!inspect(tok).includes(tok.token), "console.log never shows the token");
  assert.ok(!JSON.stringify(admin).includes(ADMIN_KEY), "the API key never serialises");

  let d = await admin.validate(tok.token, "read", "api://crm/customers/42");
  assert.equal(d.allowed, true);
  assert.equal(d.policyId, allow.id);
  assert.deepEqual(d.obligations, { maxRows: 100 });
  assert.match(d.auditId, /^aud_/);
  d = await admin.validate(tok.token, "read", "api://crm/customers/42", { rows: 500 });
  assert.equal(d.reason, "constraint_violated");
  d = await admin.validate(tok.token, "delete", "api://crm/customers/42");
  assert.deepEqual([d.allowed, d.reason, d.policyId], [false, "explicit_deny", deny.id]);
  assert.equal((await admin.validate(undefined, "read", "api://crm/customers/1")).reason, "token_missing");
  assert.equal(await actgate.validateWithACT(admin, tok.token, "read", "api://crm/customers/7"), true);
  await assert.rejects(admin.require(tok.token, "delete", "api://crm/customers/1"), (e) => e instanceof actgate.Denied && e.reason === "explicit_deny");

  await admin.updatePolicy(allow.id, {
    name: allow.name,
    agents: [agent.id],
    actions: ["read", "list"],
    resources: ["api://crm/customers/*"],
    effect: "allow",
    constraints: { maxRows: 10 },
  });
  assert.equal((await admin.validate(tok.token, "read", "api://crm/customers/1", { rows: 50 })).reason, "constraint_violated");

  await admin.revokeToken(tok.tokenId);
  assert.equal((await admin.validate(tok.token, "read", "api://crm/customers/42")).reason, "token_revoked");
  const tok2 = await admin.issueToken(agent.id);
  await admin.revokeAgent(agent.id);
  assert.equal((await admin.validate(tok2.token, "read", "api://crm/customers/42")).reason, "agent_revoked");
  await admin.deletePolicy(deny.id);
  await assert.rejects(admin.getPolicy(deny.id), actgate.NotFound);
});

test("errors are typed and name what to fix", async () => {
  const { agent } = await setup();
  await assert.rejects(new actgate.Client(gw.api, { apiKey: "nope" }).listAgents(), actgate.AuthenticationError);
  const issuer = new actgate.Client(gw.api, { apiKey: ISSUER_KEY });
  await assert.rejects(
    issuer.createPolicy({ name: "widen", actions: ["*"], resources: ["**"], effect: "allow" }),
    (e) => e instanceof actgate.PermissionDenied && e.status === 403 && /admin/.test(e.message),
  );
  await assert.rejects(
    admin.issueToken(agent.id, { expiresIn: 1e9 }),
    (e) => e instanceof actgate.InvalidRequest && e.problems[0].path === "expiresIn" && /expiresIn/.test(e.message),
  );
  await assert.rejects(admin.getAgent("agent_missing"), actgate.NotFound);
  await assert.rejects(admin.createAgent({ name: "dup", id: agent.id }), actgate.Conflict);
  await assert.rejects(new actgate.Client("http://127.0.0.1:9", { apiKey: "k" }).listAgents(), (e) => e instanceof actgate.ConnectionFailed && /is it running/.test(e.message));
  assert.throws(() => admin.getAgent("../v1/policies"), TypeError);
  const saved = process.env.ACTGATE_API_KEY;
  delete process.env.ACTGATE_API_KEY;
  assert.throws(() => new actgate.Client(gw.api), /ACTGATE_API_KEY/);
  if (saved !== undefined) process.env.ACTGATE_API_KEY = saved;
});

test("audit pages through every event", async () => {
  const { agent } = await setup();
  const { token } = await admin.issueToken(agent.id);
  for (let i = 0; i < 7; i++) await admin.validate(token, "read", `api://crm/customers/${i}`);
  let events = [];
  for (let n = 0; n < 100 && events.length < 7; n++) {
    events = [];
    for await (const e of admin.audit({ agentId: agent.id, pageSize: 2 })) events.push(e);
    if (events.length < 7) await sleep(50);
  }
  assert.deepEqual(
    events.map((e) => e.resource),
    [6, 5, 4, 3, 2, 1, 0].map((i) => `api://crm/customers/${i}`),
  );
  const denied = [];
  for await (const e of admin.audit({ agentId: agent.id, decision: "denied" })) denied.push(e);
  assert.equal(denied.length, 0);
});

test("token source renews before expiry; expired tokens are refused", async () => {
  const { agent } = await setup();
  assert.throws(() => new actgate.TokenSource(admin, agent.id, { refreshBefore: 0 }), /refreshBefore/);
  const source = new actgate.TokenSource(admin, agent.id, { ttl: 2, refreshBefore: 1 });
  const first = await source.token();
  assert.equal(await source.token(), first);
  assert.equal(source.issued, 1);
  await sleep(1100);
  const second = await source.token();
  assert.notEqual(second, first);
  assert.equal(source.issued, 2);
  assert.equal((await admin.validate(second, "read", "api://crm/customers/1")).allowed, true);
  await sleep(3200); // 2 s lifetime + 1 s clock skew + 1 s of whole-second times
  assert.equal((await admin.validate(first, "read", "api://crm/customers/1")).reason, "token_expired");
  const third = await source.token();
  assert.equal((await admin.validate(third, "read", "api://crm/customers/1")).allowed, true);
  source.invalidate();
  assert.notEqual(await source.token(), third);
  assert.equal(source.issued, 4);
});

test("concurrent callers share one issue", async () => {
  const { agent } = await setup();
  const source = new actgate.TokenSource(admin, agent.id, { ttl: 60 });
  const tokens = await Promise.all(Array.from({ length: 16 }, () => source.token()));
  assert.equal(new Set(tokens).size, 1);
  assert.equal(source.issued, 1);
});

test("guard fills the resource from arguments as data", async () => {
  const { agent } = await setup();
  const source = new actgate.TokenSource(admin, agent.id);
  const ran = [];
  const getCustomer = admin.guard({ action: "read", resource: "api://crm/customers/{customerId}", token: source, context: () => ({ rows: 1 }) }, async ({ customerId }) => {
    ran.push(customerId);
    return `customer ${customerId}`;
  });
  const deleteCustomer = admin.guard({ action: "delete", resource: "api://crm/customers/{customerId}", token: source }, async () => ran.push("deleted"));
  assert.equal(await getCustomer({ customerId: "42" }), "customer 42");
  await assert.rejects(deleteCustomer({ customerId: "42" }), (e) => e instanceof actgate.Denied && e.reason === "explicit_deny");
  for (const sneaky of ["*", "42/../../admin", "{x}", "", "a\nb", ".", "..", "..%2Fsecret", "a\u0085b"]) {
    await assert.rejects(getCustomer({ customerId: sneaky }), TypeError);
  }
  // Allowed, but the policy's maxRows was not checked (no rows sent): the function does not run.
  const unchecked = admin.guard({ action: "read", resource: "api://crm/customers/{customerId}", token: source }, async () => ran.push("unchecked"));
  await assert.rejects(unchecked({ customerId: "42" }), (e) => e instanceof actgate.ObligationUnmet && /rows/.test(e.message));
  assert.deepEqual(ran, ["42"]);
});

test("guardedExecute returns the denial to the model and takes the token from the run", async () => {
  const { agent } = await setup();
  const { token } = await admin.issueToken(agent.id);
  const ran = [];
  const execute = actgate.guardedExecute(admin, { action: "delete", resource: "api://crm/customers/{id}", name: "delete_customer" }, async ({ id }) => ran.push(id));
  const out = await execute({ id: "42" }, { context: { token } });
  assert.match(out, /^The call to delete_customer was denied by actgate \(explicit_deny\)/);
  const read = actgate.guardedExecute(admin, { action: "read", resource: "api://crm/customers/{id}", context: () => ({ rows: 1 }) }, async ({ id }) => `read ${id}`);
  assert.equal(await read({ id: "7" }, { context: { token } }), "read 7");
  await assert.rejects(read({ id: "7" }, { context: {} }), /no capability token/);
  assert.deepEqual(ran, []);
});

test("proxyFetch sends the current token; actgate strips it", async () => {
  const { agent } = await setup();
  const source = new actgate.TokenSource(admin, agent.id, { ttl: 60 });
  const f = admin.proxyFetch(gw.proxy, source);
  const r = await f("/crm/customers/42");
  assert.equal(r.status, 200);
  assert.equal((await r.json()).id, "42");
  const last = up.seen.at(-1);
  assert.equal(last.path, "/crm/customers/42");
  assert.equal(last.headers.authorization, undefined);
  assert.equal(last.headers["x-act-agent-id"], agent.id);
  assert.equal((await fetch(gw.proxy + "/crm/customers/42")).status, 401);
  // The token goes to the proxy only.
  await assert.rejects(f("http://127.0.0.1:9/steal"), TypeError);
  await assert.rejects(f("//127.0.0.1:9/steal"), TypeError);
});
