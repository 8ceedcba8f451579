//! The snapshot: everything a decision reads, compiled and versioned, behind one `ArcSwap`.
//!
//! A request loads the current snapshot once and decides against it; a change (an API
//! write, a config reload) builds a new snapshot off the hot path and swaps it in; a failed
//! build keeps the old one. [`Snapshot::decide`] is the whole of DESIGN.md §2: the token stage
//! (time, revocation, agent, tenant) then the policy core. Pure: no I/O, no locks.

use std::sync::Arc;

use ahash::{AHashMap, AHashSet};

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
        if self.revoked.contains(claims.jti.as_str()) {
            return Err(Reason::TokenRevoked);
        }
        match self.agent(&claims.tenant, &claims.agent) {
            None => return Err(Reason::AgentRevoked),
            Some(agent) if !agent.active => return Err(Reason::AgentRevoked),
            Some(_) => {}
        }
        if let Some(t) = tenant
            && t != claims.tenant
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
