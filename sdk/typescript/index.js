// actgate client for Node 18+ (global fetch), ESM, zero runtime dependencies.
// Types: index.d.ts. Every error message says what to fix; none contains a token or API key.

/** An actgate call failed. */
export class ActgateError extends Error {
  constructor(message, { status = 0, code = "", problems = [], body = undefined } = {}) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.problems = problems;
    this.body = body;
  }
}
export class ConnectionFailed extends ActgateError {}
export class InvalidRequest extends ActgateError {}
export class AuthenticationError extends ActgateError {}
export class PermissionDenied extends ActgateError {}
export class NotFound extends ActgateError {}
export class Conflict extends ActgateError {}
export class StoreUnavailable extends ActgateError {}
export class ServerError extends ActgateError {}

/** Thrown by `require` and guarded functions when actgate denies the call. */
export class Denied extends ActgateError {
  constructor(decision) {
    super(`denied by actgate (${decision.reason}): ${decision.message}`, { status: 403, code: decision.reason });
    this.decision = decision;
    this.reason = decision.reason;
  }
}

const BY_STATUS = {
  400: InvalidRequest,
  401: AuthenticationError,
  403: PermissionDenied,
  404: NotFound,
  409: Conflict,
  503: StoreUnavailable,
};

function errorOf(status, body, what) {
  let message = `HTTP ${status}`;
  let code = "";
  let problems = [];
  if (body && typeof body === "object") {
    message = String(body.message || body.error || message);
    code = String(body.error || "");
    if (Array.isArray(body.problems)) problems = body.problems;
  }
  if (problems.length) message += ": " + problems.map((p) => `${p.path}: ${p.message}`).join("; ");
  const Cls = BY_STATUS[status] || (status >= 500 ? ServerError : ActgateError);
  return new Cls(`${what}: ${message}`, { status, code, problems, body });
}

function decisionOf(body) {
  const constraints = body.constraints || {};
  return {
    allowed: body.decision === "allowed",
    decision: body.decision,
    reason: body.reason,
    message: body.message,
    policyId: body.policyId ?? null,
    constraints,
    obligations: constraints,
    auditId: body.auditId ?? null,
    requestId: body.requestId ?? null,
  };
}

function segment(id) {
  if (typeof id !== "string" || !id || /[/?#]/.test(id)) throw new TypeError(`not an id: ${JSON.stringify(id)}`);
  return id;
}

const FORBIDDEN = /[/%*?[\]{}\\\p{Cc}]/u;

/**
 * `template` with each `{name}` replaced by `args[name]`, as data: a string that could widen
 * the resource or change where a request goes (`/ % * ? [ ] { } \`, any control character,
 * `.` or `..`) or is empty is refused, exactly as actgate refuses such path parameters;
 * integers are written in decimal.
 */
export function fill(template, args) {
  return template.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name) => {
    if (!(name in args)) throw new TypeError(`resource template ${template} names {${name}}, but the call has no argument ${name}`);
    const v = args[name];
    if (!(typeof v === "string" || (typeof v === "number" && Number.isInteger(v)))) {
      throw new TypeError(`argument ${name} fills the resource and must be a string or an integer, not ${typeof v}`);
    }
    const s = String(v);
    if (!s || s === "." || s === ".." || FORBIDDEN.test(s)) {
      throw new TypeError(`argument ${name} = ${JSON.stringify(s)} cannot be part of a resource (empty, . or .., or it holds / % * ? [ ] { } \\ or a control character)`);
    }
    return s;
  });
}

/** Thrown when an allowing policy's maxRows/allowedDomains could not be checked: the call sent
 * no rows or recipients in its context, so the guarded function does not run. */
export class ObligationUnmet extends ActgateError {}

/** Why an allowed decision cannot be acted on (its constraints came back unchecked), or null. */
export function unmetObligation(decision, context) {
  const ctx = context || {};
  const c = decision.constraints || {};
  if ("maxRows" in c && !("rows" in ctx || "limit" in ctx)) {
    return `the allowing policy limits rows (maxRows ${c.maxRows}) but the call sent no rows: pass context with rows (or limit) so actgate checks it`;
  }
  if ("allowedDomains" in c && !["recipients", "to", "cc", "bcc"].some((k) => k in ctx)) {
    return "the allowing policy limits recipients (allowedDomains) but the call sent none: pass context with to (and cc, bcc) so actgate checks them";
  }
  return null;
}

async function tokenOf(token) {
  if (typeof token === "string") return token;
  if (token && typeof token.token === "function") return await token.token();
  if (typeof token === "function") return await token();
  throw new TypeError("token must be a string, a TokenSource, or a function returning the token");
}

/** The REST API client. */
export class Client {
  /**
   * @param {string} baseUrl e.g. "http://127.0.0.1:8081"
   * @param {{apiKey?: string, timeoutMs?: number, fetch?: typeof fetch}} [options]
   */
  constructor(baseUrl = "http://127.0.0.1:8081", options = {}) {
    const apiKey = options.apiKey ?? process.env.ACTGATE_API_KEY;
    if (!apiKey) {
      throw new TypeError("no API key: pass { apiKey } or set ACTGATE_API_KEY (an issuer key for a tool-runner, an admin key for setup)");
    }
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    Object.defineProperty(this, "apiKey", { value: apiKey, enumerable: false });
    this.timeoutMs = options.timeoutMs ?? 10000;
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  toJSON() {
    return { baseUrl: this.baseUrl };
  }

  async #call(method, path, what, { body, params, decision = false } = {}) {
    let url = this.baseUrl + path;
    if (params) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
      const s = q.toString();
      if (s) url += "?" + s;
    }
    const headers = { "X-Api-Key": this.apiKey };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let r;
    try {
      r = await this.fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        redirect: "error", // never send the API key or a token on to another place
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new ConnectionFailed(`${what}: cannot reach actgate at ${this.baseUrl} (${e?.cause?.code || e?.cause?.message || e?.message || "error"}); is it running, and is this its API address (e.g. http://127.0.0.1:8081)?`);
    }
    const text = await r.text();
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    // /v1/enforce answers 503 with a decision when actgate cannot decide: a denial.
    if (decision && r.status === 503 && json?.decision === "denied") return decisionOf(json);
    if (r.status >= 400) throw errorOf(r.status, json, what);
    if (r.status < 200 || r.status >= 300 || !json || typeof json !== "object") {
      throw new ActgateError(`${what}: ${url} answered HTTP ${r.status} without the API's JSON: is this actgate's REST API address (not its proxy or admin port)?`, { status: r.status });
    }
    return json;
  }

  // agents
  createAgent(agent) {
    return this.#call("POST", "/v1/agents", "create agent", { body: agent });
  }
  getAgent(id) {
    return this.#call("GET", `/v1/agents/${segment(id)}`, `get agent ${id}`);
  }
  async listAgents() {
    return (await this.#call("GET", "/v1/agents", "list agents")).agents;
  }
  revokeAgent(id) {
    return this.#call("DELETE", `/v1/agents/${segment(id)}`, `revoke agent ${id}`);
  }

  // policies
  createPolicy(policy) {
    return this.#call("POST", "/v1/policies", "create policy", { body: policy });
  }
  getPolicy(id) {
    return this.#call("GET", `/v1/policies/${segment(id)}`, `get policy ${id}`);
  }
  async listPolicies() {
    return (await this.#call("GET", "/v1/policies", "list policies")).policies;
  }
  updatePolicy(id, policy) {
    return this.#call("PUT", `/v1/policies/${segment(id)}`, `update policy ${id}`, { body: policy });
  }
  deletePolicy(id) {
    return this.#call("DELETE", `/v1/policies/${segment(id)}`, `delete policy ${id}`);
  }

  // tokens
  /** @returns {Promise<{token: string, tokenId: string, agentId: string, tenantId: string, expiresAt: string, expiresIn: number}>} */
  async issueToken(agentId, { expiresIn, policyIds } = {}) {
    const t = await this.#call("POST", "/v1/tokens", `issue a token for ${agentId}`, {
      body: { agentId, ...(expiresIn !== undefined && { expiresIn }), ...(policyIds && { policyIds }) },
    });
    // The token itself stays out of console.log and util.inspect (JSON.stringify keeps it:
    // sending it is what it is for).
    Object.defineProperty(t, Symbol.for("nodejs.util.inspect.custom"), {
      value: () => `IssuedToken { tokenId: '${t.tokenId}', agentId: '${t.agentId}', expiresAt: '${t.expiresAt}', token: '…' }`,
      enumerable: false,
    });
    return t;
  }
  revokeToken(tokenId) {
    return this.#call("DELETE", `/v1/tokens/${segment(tokenId)}`, `revoke token ${tokenId}`);
  }

  // decisions
  /** Whether `token` may do `action` on `resource`; a denial is a Decision, not an error. */
  async validate(token, action, resource, context, { requestId } = {}) {
    if (!action || !resource) {
      throw new TypeError("validate needs an action (e.g. 'read') and a resource (e.g. 'api://crm/customers/42')");
    }
    const body = {
      action,
      resourceId: resource,
      ...(token && { capabilityToken: token }),
      ...(context && { context }),
      ...(requestId && { requestId }),
    };
    const json = await this.#call("POST", "/v1/enforce", `validate ${action} on ${resource}`, { body, decision: true });
    if (json.allowed !== undefined) return json; // already a Decision (a 503 denial)
    if (json.decision !== "allowed" && json.decision !== "denied") {
      throw new ActgateError(`validate ${action} on ${resource}: the answer has no decision`, { body: json });
    }
    return decisionOf(json);
  }

  /** Like validate, but throws Denied unless allowed. */
  async require(token, action, resource, context) {
    const d = await this.validate(token, action, resource, context);
    if (!d.allowed) throw new Denied(d);
    return d;
  }

  /** The tenant's audit events, newest first, a page at a time as you iterate. */
  async *audit({ agentId, decision, action, resource, since, until, pageSize = 100 } = {}) {
    if (decision !== undefined && decision !== "allowed" && decision !== "denied") {
      throw new TypeError("decision must be 'allowed' or 'denied'");
    }
    if (!(pageSize >= 1 && pageSize <= 1000)) throw new TypeError("pageSize must be 1 to 1000");
    let cursor;
    for (;;) {
      const page = await this.#call("GET", "/v1/audit", "read the audit trail", {
        params: { agentId, decision, action, resource, since, until, limit: pageSize, cursor },
      });
      yield* page.events;
      cursor = page.nextCursor;
      if (!cursor) return;
    }
  }

  /**
   * Wraps `fn(args)` (one object argument, as tool frameworks call it): validates `action` on
   * `resource` (a template filled from `args`) first and throws Denied instead of running it.
   */
  guard({ action, resource, token, context }, fn) {
    return async (args = {}, ...rest) => {
      const res = fill(resource, args);
      const ctx = context ? context(args) : undefined;
      const d = await this.validate(await tokenOf(token), action, res, ctx);
      if (!d.allowed) throw new Denied(d);
      const missing = unmetObligation(d, ctx);
      if (missing) throw new ObligationUnmet(missing);
      return await fn(args, ...rest);
    };
  }

  /** A fetch for actgate's proxy that sends the current token as `Authorization: Bearer`. */
  proxyFetch(proxyUrl, token) {
    const base = proxyUrl.replace(/\/+$/, "");
    return async (path, init = {}) => {
      // A path on the proxy, never a URL: the token goes to actgate's proxy only.
      if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//")) {
        throw new TypeError(`proxyFetch takes a path on the proxy starting with one "/", not ${JSON.stringify(path)}`);
      }
      const headers = new Headers(init.headers || {});
      headers.set("Authorization", `Bearer ${await tokenOf(token)}`);
      return this.fetch(base + path, { ...init, headers, redirect: "manual" });
    };
  }
}

/**
 * Issues a token for one agent and hands it out until it nears expiry, then issues the next.
 * Concurrent callers share one issue.
 */
export class TokenSource {
  constructor(client, agentId, { ttl, policyIds, refreshBefore, now = () => performance.now() / 1000 } = {}) {
    if (refreshBefore !== undefined && !(refreshBefore > 0)) {
      throw new TypeError("refreshBefore must be more than 0 seconds (renewing at expiry hands out expired tokens)");
    }
    this.client = client;
    this.agentId = agentId;
    this.ttl = ttl;
    this.policyIds = policyIds;
    this.refreshBefore = refreshBefore;
    this.now = now;
    this.issued = 0;
    this.#current = null;
    this.#renewAt = 0;
    this.#pending = null;
  }
  #current;
  #renewAt;
  #pending;
  #expiresWall = 0;
  #margin = 0;

  toJSON() {
    return { agentId: this.agentId };
  }

  /** The token in force (issuing a new one when due). */
  /** Forget the token in force (after revoking it): the next call issues a new one. */
  invalidate() {
    this.#current = null;
  }

  async current() {
    // The monotonic clock stops while a machine sleeps: the wall clock against the token's own
    // expiry catches that.
    if (this.#current && this.now() < this.#renewAt && Date.now() / 1000 < this.#expiresWall - this.#margin) {
      return this.#current;
    }
    if (!this.#pending) {
      this.#pending = (async () => {
        try {
          const t = await this.client.issueToken(this.agentId, { expiresIn: this.ttl, policyIds: this.policyIds });
          this.issued += 1;
          const margin = this.refreshBefore ?? Math.max(5, t.expiresIn / 5);
          this.#current = t;
          this.#margin = margin;
          this.#renewAt = this.now() + Math.max(0, t.expiresIn - margin);
          this.#expiresWall = Date.now() / 1000 + t.expiresIn;
          return t;
        } finally {
          this.#pending = null;
        }
      })();
    }
    return this.#pending;
  }

  async token() {
    return (await this.current()).token;
  }
}

/** What a model reads when actgate denies a tool call. */
export function denialText(decision, tool) {
  const hint =
    decision.reason === "constraint_violated"
      ? "Change the arguments to stay within the constraint."
      : decision.reason === "explicit_deny"
        ? "This is forbidden by policy; do not retry it."
        : "Do not retry it with other wording.";
  const policy = decision.policyId ? ` Policy: ${decision.policyId}.` : "";
  return `The call to ${tool} was denied by actgate (${decision.reason}): ${decision.message}.${policy} ${hint}`;
}

/**
 * For `@openai/agents` (or any tool framework calling `execute(args, runContext)`): an
 * `execute` that validates with actgate first and, when denied, returns the denial text to
 * the model instead of running (or throwing). The token comes from `token` (string,
 * TokenSource, function of the run context) or, by default, from the run's context
 * (`runContext.context.token`), never from the model.
 *
 *   tool({ name: "send_email", parameters, execute: guardedExecute(client,
 *     { action: "send_email", resource: "api://email/outbound", context: (a) => ({ to: [a.to] }) },
 *     async (a) => send(a)) })
 */
export function guardedExecute(client, { action, resource, token, context, name }, execute) {
  return async (args = {}, runContext, ...rest) => {
    let tok = token;
    if (tok === undefined) tok = runContext?.context?.token;
    else if (typeof tok === "function" && !(typeof tok.token === "function")) tok = await tok(runContext);
    if (!tok) throw new TypeError("no capability token for this run: pass token, or run with context { token }");
    const res = fill(resource, args);
    const ctx = context ? context(args) : undefined;
    const d = await client.validate(await tokenOf(tok), action, res, ctx);
    if (!d.allowed) return denialText(d, name ?? action);
    const missing = unmetObligation(d, ctx);
    if (missing) throw new ObligationUnmet(`${name ?? action}: ${missing}`);
    return await execute(args, runContext, ...rest);
  };
}

/** The ACT guide's `validateWithACT(token, action, resource)` as a one-liner. */
export function validateWithACT(client, token, action, resource, context) {
  return client.validate(token, action, resource, context).then((d) => d.allowed);
}
