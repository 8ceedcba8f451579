//! The snapshot: everything a decision reads, compiled and versioned, behind one `ArcSwap`.
//!
//! A request loads the current snapshot once and decides against it; a change (an API
//! write, a config reload) builds a new snapshot off the hot path and swaps it in; a failed
//! build keeps the old one. [`Snapshot::decide`] is the whole of DESIGN.md §2: the token stage
//! (time, revocation, agent, tenant) then the policy core. Pure: no I/O, no locks.

use std::sync::Arc;

use ahash::{AHashMap, AHashSet};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::policy::{Decision, PolicySet, Principal, Query, Reason};
use crate::proxy::forward::Upstreams;
use crate::proxy::route::RouteTable;
use crate::token::Claims;

/// What the decision needs to know of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentState {
    /// False once revoked.
    pub active: bool,
    /// Its tokens are honoured only from a client certificate of its own (agent metadata
    /// `senderConstrained: true`).
    pub sender_constrained: bool,
}

/// Agents by tenant, then id: ids are unique within a tenant only.
pub type AgentsByTenant = AHashMap<Box<str>, AHashMap<Box<str>, AgentState>>;

/// What `actgate check` and `POST /v1/check` answer: the decision for an agent (no token) and,
/// for every policy of the tenant, where it came from and how it related to the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// `allowed` or `denied`.
    pub decision: String,
    /// Reason code.
    pub reason: String,
    /// Explanation.
    pub message: String,
    /// Deciding policy.
    pub policy_id: Option<String>,
    /// The deciding policy's constraints (obligations when allowed).
    pub constraints: serde_json::Value,
    /// The agent checked.
    pub agent_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// `active`, `revoked` or `unknown` (not registered in the tenant).
    pub agent_status: String,
    /// Version of the snapshot that decided.
    pub snapshot_version: u64,
    /// Every policy of the tenant, in precedence order.
    pub policies: Vec<CheckLine>,
}

/// One policy in a [`CheckReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckLine {
    /// Policy id.
    pub id: String,
    /// Policy name.
    pub name: String,
    /// `allow` or `deny`.
    pub effect: String,
    /// `config` or `api`.
    pub source: String,
    /// How it related to the request.
    pub why: String,
}

/// The compiled state decisions are made against.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every swap; carried by every audit event.
    pub version: u64,
    /// The config in force (routes, limits, upstreams, policies as code).
    pub config: Arc<Config>,
    /// Config and API policies, indexed.
    pub policies: Arc<PolicySet>,
    /// Proxy routes.
    pub routes: Arc<RouteTable>,
    /// Upstream clients, built from `config`.
    pub upstreams: Arc<Upstreams>,
    /// Registered agents by tenant, then id: ids are unique within a tenant only.
    pub agents: Arc<AgentsByTenant>,
    /// Revoked token ids (until they expire).
    pub revoked: Arc<AHashSet<Box<str>>>,
    /// API keys (the config's and the stored ones) by the SHA-256 of the key.
    pub api_keys: Arc<AHashMap<[u8; 32], crate::store::ApiKeyRecord>>,
}

impl Snapshot {
    /// Decides a request. `token` is the outcome of verifying the presented token (or
    /// `Err(TokenMissing)`); `tenant` is the tenant the request names, if any; `now` is Unix
    /// seconds; `skew` the tolerated clock skew in seconds.
    pub fn decide<'s>(
        &'s self,
        token: Result<&Claims, Reason>,
        tenant: Option<&str>,
        query: &Query<'_>,
        now: i64,
        skew: i64,
    ) -> Decision<'s> {
        let claims = match token {
            Ok(c) => c,
            Err(reason) => return Decision::denied(reason),
        };
        if let Err(reason) = self.check_token(claims, tenant, now, skew) {
            return Decision::denied(reason);
        }
        let who = Principal {
            tenant: &claims.tenant,
            agent: &claims.agent,
            policy_ids: claims.policy_ids.as_deref(),
        };
        self.policies.evaluate(&who, query)
    }

    /// Decides for an agent without a token (`actgate check`, `POST /v1/check`): the agent
    /// must be registered and active in `tenant`, then the policy stage runs as for a token
    /// of that agent narrowed to `policy_ids`.
    pub fn decide_for_agent<'s>(
        &'s self,
        tenant: &str,
        agent: &str,
        policy_ids: Option<&[String]>,
        query: &Query<'_>,
    ) -> Decision<'s> {
        match self.agent(tenant, agent) {
            Some(a) if a.active => {}
            _ => return Decision::denied(Reason::AgentRevoked),
        }
        let who = Principal {
            tenant,
            agent,
            policy_ids,
        };
        self.policies.evaluate(&who, query)
    }

    /// [`Snapshot::decide_for_agent`] with the explanation of every policy of the tenant.
    pub fn check(
        &self,
        tenant: &str,
        agent: &str,
        policy_ids: Option<&[String]>,
        query: &Query<'_>,
    ) -> CheckReport {
        let decision = self.decide_for_agent(tenant, agent, policy_ids, query);
        let who = Principal {
            tenant,
            agent,
            policy_ids,
        };
        let agent_status = match self.agent(tenant, agent) {
            Some(a) if a.active => "active",
            Some(_) => "revoked",
            None => "unknown",
        };
        let message = if agent_status == "active" {
            decision.message()
        } else {
            // Say what the policies alone would answer, so a policy can be checked before its
            // agent exists.
            let alone = self.policies.evaluate(&who, query);
            let alone = match alone.policy {
                Some(p) => format!("{} ({}, policy {})", alone.verdict(), alone.reason, p.id),
                None => format!("{} ({})", alone.verdict(), alone.reason),
            };
            let state = if agent_status == "unknown" {
                "is not registered in"
            } else {
                "is revoked in"
            };
            format!(
                "agent {agent} {state} tenant {tenant}: its tokens are denied (the policies alone would answer: {alone})"
            )
        };
        CheckReport {
            decision: decision.verdict().to_string(),
            reason: decision.reason.as_str().to_string(),
            message,
            policy_id: decision.policy.map(|p| p.id.to_string()),
            constraints: decision
                .policy
                .filter(|_| decision.is_allowed())
                .and_then(|p| serde_json::to_value(&p.constraints).ok())
                .unwrap_or_else(|| serde_json::json!({})),
            agent_id: agent.to_string(),
            tenant_id: tenant.to_string(),
            agent_status: agent_status.to_string(),
            snapshot_version: self.version,
            policies: crate::policy::explain(&self.policies, &who, query)
                .into_iter()
                .map(|line| CheckLine {
                    id: line.policy.id.to_string(),
                    name: line.policy.name.clone(),
                    effect: format!("{:?}", line.policy.effect).to_lowercase(),
                    source: line.policy.source.as_str().to_string(),
                    why: line.why.to_string(),
                })
                .collect(),
        }
    }

    /// An agent of a tenant.
    pub fn agent(&self, tenant: &str, id: &str) -> Option<&AgentState> {
        self.agents.get(tenant)?.get(id)
    }

    /// The token stage of a decision (DESIGN.md §2, step 1), after the signature verified.
    pub fn check_token(
        &self,
        claims: &Claims,
        tenant: Option<&str>,
        now: i64,
        skew: i64,
    ) -> Result<(), Reason> {
        if claims.not_before > now + skew {
            return Err(Reason::TokenInvalid);
        }
        if claims.expires_at + skew < now {
            return Err(Reason::TokenExpired);
        }
        // A lifetime longer than tokens.maxTtl was never issued by this gateway's rules (a
        // token minted with a leaked key, or under an older, laxer config); nor an `iat` in the
        // future, nor an `exp` further away than maxTtl from now — so no choice of `iat`
        // stretches a token's life.
        let max_ttl = self.config.tokens.max_ttl.as_secs() as i64;
        if claims.expires_at - claims.issued_at > max_ttl + skew
            || claims.issued_at > now + skew
            || claims.expires_at > now + max_ttl + skew
        {
            return Err(Reason::TokenInvalid);
        }
        if self.revoked.contains(&*claims.jti) {
            return Err(Reason::TokenRevoked);
        }
        match self.agent(&claims.tenant, &claims.agent) {
            None => return Err(Reason::AgentRevoked),
            Some(agent) if !agent.active => return Err(Reason::AgentRevoked),
            Some(_) => {}
        }
        if let Some(t) = tenant
            && t != &*claims.tenant
        {
            return Err(Reason::TenantMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Facts;

    fn claims() -> Claims {
        Claims {
            jti: "tok_1".into(),
            agent: "agent_1".into(),
            tenant: "t".into(),
            issued_at: 1000,
            not_before: 1000,
            expires_at: 2000,
            policy_ids: None,
            kid: "k1".into(),
        }
    }

    fn snapshot(active: bool, revoked: &[&str]) -> Snapshot {
        let mut agents = AgentsByTenant::new();
        agents.entry("t".into()).or_default().insert(
            "agent_1".into(),
            AgentState {
                active,
                sender_constrained: false,
            },
        );
        Snapshot {
            agents: Arc::new(agents),
            revoked: Arc::new(revoked.iter().map(|s| (*s).into()).collect()),
            ..Snapshot::default()
        }
    }

    fn reason(s: &Snapshot, c: &Claims, tenant: Option<&str>, now: i64) -> Reason {
        let q = Query {
            action: "read",
            resource: "api://x",
            facts: Facts::default(),
        };
        s.decide(Ok(c), tenant, &q, now, 30).reason
    }

    #[test]
    fn token_stage_reasons() {
        let s = snapshot(true, &[]);
        let c = claims();
        // Valid token, no policy: the policy stage answers.
        assert_eq!(reason(&s, &c, None, 1500), Reason::NoMatchingPolicy);
        assert_eq!(reason(&s, &c, Some("t"), 1500), Reason::NoMatchingPolicy);
        assert_eq!(
            reason(&s, &c, None, 969),
            Reason::TokenInvalid,
            "not yet valid"
        );
        assert_eq!(
            reason(&s, &c, None, 970),
            Reason::NoMatchingPolicy,
            "nbf within skew"
        );
        assert_eq!(
            reason(&s, &c, None, 2030),
            Reason::NoMatchingPolicy,
            "exp within skew"
        );
        assert_eq!(reason(&s, &c, None, 2031), Reason::TokenExpired);
        assert_eq!(reason(&s, &c, Some("other"), 1500), Reason::TenantMismatch);
        assert_eq!(
            reason(&snapshot(true, &["tok_1"]), &c, None, 1500),
            Reason::TokenRevoked
        );
        assert_eq!(
            reason(&snapshot(false, &[]), &c, None, 1500),
            Reason::AgentRevoked
        );
        let mut stranger = claims();
        stranger.agent = "agent_unknown".into();
        assert_eq!(reason(&s, &stranger, None, 1500), Reason::AgentRevoked);
        // The same agent id in another tenant is another agent, unknown here.
        let mut cross = claims();
        cross.tenant = "other".into();
        assert_eq!(reason(&s, &cross, None, 1500), Reason::AgentRevoked);
        // A lifetime beyond tokens.maxTtl (24h by default) + skew is not one this gateway
        // issues, whatever key signed it.
        let mut long = claims();
        long.expires_at = long.issued_at + 24 * 3600 + 30;
        assert_eq!(reason(&s, &long, None, 1500), Reason::NoMatchingPolicy);
        long.expires_at += 1;
        assert_eq!(reason(&s, &long, None, 1500), Reason::TokenInvalid);
        // Nor does an `iat` in the future stretch it: exp at most maxTtl (+ skew) from now.
        let mut future = claims();
        future.issued_at = 1500 + 365 * 24 * 3600 - 24 * 3600;
        future.not_before = 1000;
        future.expires_at = 1500 + 365 * 24 * 3600;
        assert_eq!(reason(&s, &future, None, 1500), Reason::TokenInvalid);
        // An `iat` just inside the skew, a lifetime just inside maxTtl + skew, and still an
        // `exp` beyond now + maxTtl + skew.
        future.issued_at = 1520;
        future.expires_at = 1520 + 24 * 3600 + 30;
        assert_eq!(
            reason(&s, &future, None, 1500),
            Reason::TokenInvalid,
            "exp too far from now"
        );
        future.expires_at = 1500 + 24 * 3600 + 30;
        assert_eq!(reason(&s, &future, None, 1500), Reason::NoMatchingPolicy);
        let q = Query {
            action: "read",
            resource: "api://x",
            facts: Facts::default(),
        };
        assert_eq!(
            s.decide(Err(Reason::TokenMissing), None, &q, 1500, 30)
                .reason,
            Reason::TokenMissing
        );
    }
}
