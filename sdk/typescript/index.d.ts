// Types of the actgate client (index.js).

export interface Problem {
  path: string;
  message: string;
}

export class ActgateError extends Error {
  /** HTTP status (0: no answer). */
  status: number;
  /** The body's machine-readable `error`. */
  code: string;
  /** Per-field problems of a 400. */
  problems: Problem[];
  body: unknown;
}
export class ConnectionFailed extends ActgateError {}
export class InvalidRequest extends ActgateError {}
export class AuthenticationError extends ActgateError {}
export class PermissionDenied extends ActgateError {}
export class NotFound extends ActgateError {}
export class Conflict extends ActgateError {}
export class StoreUnavailable extends ActgateError {}
export class ServerError extends ActgateError {}
export class ObligationUnmet extends ActgateError {}
export class Denied extends ActgateError {
  decision: Decision;
  reason: string;
}

export interface Decision {
  allowed: boolean;
  decision: "allowed" | "denied";
  /** allowed, token_missing, token_invalid, token_expired, token_revoked, agent_revoked,
   * tenant_mismatch, sender_mismatch, explicit_deny, constraint_violated, no_matching_policy,
   * internal_error, store_unavailable */
  reason: string;
  message: string;
  policyId: string | null;
  /** The deciding policy's constraints: obligations when the facts were not sent. */
  constraints: Record<string, unknown>;
  obligations: Record<string, unknown>;
  auditId: string | null;
  requestId: string | null;
}

export interface IssuedToken {
  token: string;
  policyIds?: string[] | null;
  tokenId: string;
  agentId: string;
  tenantId: string;
  expiresAt: string;
  expiresIn: number;
}

export interface Policy {
  id?: string;
  name: string;
  description?: string;
  actions: string[];
  resources: string[];
  effect: "allow" | "deny";
  constraints?: { maxRows?: number; allowedDomains?: string[]; readOnly?: boolean };
  agents?: string[];
}

export type TokenLike = string | TokenSource | (() => string | Promise<string>);

export interface ClientOptions {
  /** Default: the ACTGATE_API_KEY environment variable. */
  apiKey?: string;
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export interface AuditFilter {
  agentId?: string;
  decision?: "allowed" | "denied";
  action?: string;
  resource?: string;
  /** RFC 3339 or Unix milliseconds. */
  since?: string | number;
  until?: string | number;
  pageSize?: number;
}

export class Client {
  constructor(baseUrl?: string, options?: ClientOptions);
  readonly baseUrl: string;
  createAgent(agent: { name: string; id?: string; description?: string; metadata?: Record<string, unknown> }): Promise<Record<string, any>>;
  getAgent(id: string): Promise<Record<string, any>>;
  listAgents(): Promise<Record<string, any>[]>;
  revokeAgent(id: string): Promise<Record<string, any>>;
  createPolicy(policy: Policy): Promise<Record<string, any>>;
  getPolicy(id: string): Promise<Record<string, any>>;
  listPolicies(): Promise<Record<string, any>[]>;
  updatePolicy(id: string, policy: Policy): Promise<Record<string, any>>;
  deletePolicy(id: string): Promise<Record<string, any>>;
  issueToken(agentId: string, options?: { expiresIn?: number; policyIds?: string[] }): Promise<IssuedToken>;
  revokeToken(tokenId: string): Promise<Record<string, any>>;
  validate(token: string | null | undefined, action: string, resource: string, context?: Record<string, unknown>, options?: { requestId?: string }): Promise<Decision>;
  require(token: string | null | undefined, action: string, resource: string, context?: Record<string, unknown>): Promise<Decision>;
  audit(filter?: AuditFilter): AsyncGenerator<Record<string, any>, void, unknown>;
  guard<A extends object, R>(
    options: { action: string; resource: string; token: TokenLike; context?: (args: A) => Record<string, unknown> },
    fn: (args: A, ...rest: any[]) => R | Promise<R>,
  ): (args: A, ...rest: any[]) => Promise<R>;
  proxyFetch(proxyUrl: string, token: TokenLike): (path: string, init?: RequestInit) => Promise<Response>;
}

export class TokenSource {
  constructor(client: Client, agentId: string, options?: { ttl?: number; policyIds?: string[]; refreshBefore?: number; now?: () => number });
  readonly agentId: string;
  /** How many tokens this source has issued. */
  issued: number;
  current(): Promise<IssuedToken>;
  token(): Promise<string>;
  /** Forget the token in force (after revoking it): the next call issues a new one. */
  invalidate(): void;
}

export function fill(template: string, args: Record<string, unknown>): string;
export function unmetObligation(decision: Decision, context?: Record<string, unknown>): string | null;
export function denialText(decision: Decision, tool: string): string;
export function guardedExecute<A extends object, R>(
  client: Client,
  options: {
    action: string;
    resource: string;
    token?: string | TokenSource | ((runContext: any) => string | Promise<string>);
    context?: (args: A) => Record<string, unknown>;
    name?: string;
  },
  execute: (args: A, runContext?: any, ...rest: any[]) => R | Promise<R>,
): (args: A, runContext?: any, ...rest: any[]) => Promise<R | string>;
export function validateWithACT(client: Client, token: string, action: string, resource: string, context?: Record<string, unknown>): Promise<boolean>;
