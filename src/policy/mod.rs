//! The decision core: policies, their compiled index, and `evaluate`.
//!
//! Pure and synchronous: no I/O, no locks, no clock (time comes in as an argument), no
//! allocation on the allow path. The proxy, `/v1/enforce` and `actgate check` all decide
//! through here, so there is exactly one reading of DESIGN.md §2:
//!
//! 1. the token stage (signature, time, revocation, agent, tenant) runs first, in
//!    [`crate::snapshot`], and yields a [`Principal`];
//! 2. candidates are the tenant's policies that apply to the agent; a token narrowed to
//!    `policyIds` keeps only those among the *allow* policies — every deny still applies, so
//!    narrowing can only take permissions away;
//! 3. a policy matches when it covers the action (or `"*"`) and one of its globs matches the
//!    resource;
//! 4. any matching deny → denied, `explicit_deny`;
//! 5. else the first matching allow whose constraints hold → allowed;
//! 6. else, if allows matched but each broke a constraint → denied, `constraint_violated`;
//! 7. else denied, `no_matching_policy`.
//!
//! [`explain`] walks every policy of the tenant one by one and says why each did or did not
//! apply; [`reference_decide`] folds that walk into a decision and is the oracle the indexed
//! [`PolicySet::evaluate`] is tested against.

pub mod address;
pub mod context;
pub mod glob;
mod index;
pub mod model;
pub mod reach;

use std::fmt;

pub use index::{MAX_ENTRIES_PER_POLICY, PolicySet};
pub use model::{
    Constraints, Effect, Facts, Policy, PolicyInput, PolicySource, Violation, validate_policy,
};

/// Who is asking: established by the token stage.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The token's tenant.
    pub tenant: &'a str,
    /// The token's agent.
    pub agent: &'a str,
    /// The token's `policyIds`, when it is narrowed to some.
    pub policy_ids: Option<&'a [String]>,
}

/// What is being asked for.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The action, e.g. `read`.
    pub action: &'a str,
    /// The resource id, e.g. `api://crm/customers/42`. Always data, never a pattern.
    pub resource: &'a str,
    /// What the request brings for constraints.
    pub facts: Facts<'a>,
}

/// Why a decision came out the way it did. The codes are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An allow policy matched and its constraints held.
    Allowed,
    /// No token was presented.
    TokenMissing,
    /// The token is malformed, forged, signed by an unknown key, not yet valid, or names an
    /// unknown agent.
    TokenInvalid,
    /// The token's `exp` is past (beyond the clock skew).
    TokenExpired,
    /// The token was revoked.
    TokenRevoked,
    /// The token's agent was revoked.
    AgentRevoked,
    /// The token belongs to another tenant than the request names.
    TenantMismatch,
    /// A sender-constrained token came from a connection whose client certificate does not
    /// name its agent.
    SenderMismatch,
    /// A deny policy matched.
    ExplicitDeny,
    /// Allow policies matched but each broke a constraint.
    ConstraintViolated,
    /// Nothing allowed it: default deny.
    NoMatchingPolicy,
    /// Something failed inside actgate; it denies.
    InternalError,
    /// The shared store has been unreachable for longer than `store.maxStaleness`: the
    /// snapshot may miss revocations, so every decision is refused (503), in monitor mode too.
    StoreUnavailable,
}

impl Reason {
    /// Every reason, for metric pre-registration and documentation.
    pub const ALL: [Reason; 13] = [
        Reason::Allowed,
        Reason::TokenMissing,
        Reason::TokenInvalid,
        Reason::TokenExpired,
        Reason::TokenRevoked,
        Reason::AgentRevoked,
        Reason::TenantMismatch,
        Reason::SenderMismatch,
        Reason::ExplicitDeny,
        Reason::ConstraintViolated,
        Reason::NoMatchingPolicy,
        Reason::InternalError,
        Reason::StoreUnavailable,
    ];

    /// The wire code, e.g. `explicit_deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::TokenMissing => "token_missing",
            Reason::TokenInvalid => "token_invalid",
            Reason::TokenExpired => "token_expired",
            Reason::TokenRevoked => "token_revoked",
            Reason::AgentRevoked => "agent_revoked",
            Reason::TenantMismatch => "tenant_mismatch",
            Reason::SenderMismatch => "sender_mismatch",
            Reason::ExplicitDeny => "explicit_deny",
            Reason::ConstraintViolated => "constraint_violated",
            Reason::NoMatchingPolicy => "no_matching_policy",
            Reason::InternalError => "internal_error",
            Reason::StoreUnavailable => "store_unavailable",
        }
    }

    /// Whether the token stage produced this reason (answered 401 by the proxy).
    pub fn is_token_problem(self) -> bool {
        match self {
            Reason::TokenMissing
            | Reason::TokenInvalid
            | Reason::TokenExpired
            | Reason::TokenRevoked
            | Reason::AgentRevoked
            | Reason::TenantMismatch
            | Reason::SenderMismatch => true,
            Reason::Allowed
            | Reason::ExplicitDeny
            | Reason::ConstraintViolated
            | Reason::NoMatchingPolicy
            | Reason::InternalError
            | Reason::StoreUnavailable => false,
        }
    }

    /// Whether this denial holds in monitor mode too: actgate cannot decide at all, so it
    /// forwards nothing (answered 503).
    pub fn fails_closed_always(self) -> bool {
        self == Reason::StoreUnavailable
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one decision. Borrows the deciding policy from the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<'s> {
    /// Why.
    pub reason: Reason,
    /// The deciding policy, when there is one.
    pub policy: Option<&'s Policy>,
    /// The broken constraint, for `constraint_violated`.
    pub violation: Option<Violation>,
}

impl<'s> Decision<'s> {
    /// A denial with no deciding policy.
    pub fn denied(reason: Reason) -> Self {
        debug_assert!(reason != Reason::Allowed);
        Decision {
            reason,
            policy: None,
            violation: None,
        }
    }

    fn by(reason: Reason, policy: &'s Policy) -> Self {
        Decision {
            reason,
            policy: Some(policy),
            violation: None,
        }
    }

    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.reason == Reason::Allowed
    }

    /// `allowed` or `denied`.
    pub fn verdict(&self) -> &'static str {
        if self.is_allowed() {
            "allowed"
        } else {
            "denied"
        }
    }

    /// A sentence an agent (or its operator) can act on. Never contains a token.
    pub fn message(&self) -> String {
        let name = self.policy.map(|p| p.name.as_str()).unwrap_or("");
        match self.reason {
            Reason::Allowed => format!("allowed by policy {name:?}"),
            Reason::TokenMissing => {
                "no capability token: send it as `Authorization: Bearer <token>` or `X-Act-Token`"
                    .into()
            }
            Reason::TokenInvalid => {
                "the capability token is not valid here (malformed, forged, not yet valid, or issued by another gateway); request a new one".into()
            }
            Reason::TokenExpired => "the capability token has expired; request a new one".into(),
            Reason::TokenRevoked => "the capability token was revoked".into(),
            Reason::AgentRevoked => "the token's agent is revoked or unknown".into(),
            Reason::TenantMismatch => "the token belongs to another tenant".into(),
            Reason::SenderMismatch => {
                "this token is bound to its agent's workload: present that workload's client certificate".into()
            }
            Reason::ExplicitDeny => format!("denied by policy {name:?}"),
            Reason::ConstraintViolated => match &self.violation {
                Some(v) => format!("policy {name:?} matched but a constraint failed: {v}"),
                None => format!("policy {name:?} matched but a constraint failed"),
            },
            Reason::NoMatchingPolicy => {
                "no policy allows this action on this resource (default deny)".into()
            }
            Reason::InternalError => "actgate could not decide; denied (fail closed)".into(),
            Reason::StoreUnavailable => "actgate's store has been unreachable for longer than store.maxStaleness, so revocations may be missing; denied (fail closed) until it is back".into(),
        }
    }
}

/// How one policy related to a request, for `explain`.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// The policy's `agents` list does not name this agent.
    OtherAgent,
    /// An allow outside the `policyIds` the token is narrowed to.
    NotInToken,
    /// The policy does not cover the action.
    ActionNotCovered,
    /// No resource glob matches.
    ResourceNotMatched,
    /// A deny matched.
    Denies,
    /// An allow matched and its constraints hold.
    Allows,
    /// An allow matched but a constraint failed.
    Violates(Violation),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::OtherAgent => f.write_str("not for this agent"),
            Why::NotInToken => f.write_str("not among the token's policyIds"),
            Why::ActionNotCovered => f.write_str("action not covered"),
            Why::ResourceNotMatched => f.write_str("no resource glob matches"),
            Why::Denies => f.write_str("matches: deny"),
            Why::Allows => f.write_str("matches: allow, constraints hold"),
            Why::Violates(v) => write!(f, "matches: allow, but {v}"),
        }
    }
}

/// One line of an explanation.
#[derive(Debug, Clone)]
pub struct Explained<'s> {
    /// The policy.
    pub policy: &'s Policy,
    /// How it related to the request.
    pub why: Why,
}

/// Walks every policy of the principal's tenant, in precedence order, and says how each
/// related to the request. Slow and simple on purpose: globs are compiled per call.
pub fn explain<'s>(
    set: &'s PolicySet,
    who: &Principal<'_>,
    query: &Query<'_>,
) -> Vec<Explained<'s>> {
    set.policies()
        .iter()
        .filter(|p| p.tenant == who.tenant)
        .map(|policy| {
            let why = if !policy.covers_agent(who.agent) {
                Why::OtherAgent
            } else if policy.effect == Effect::Allow
                && who
                    .policy_ids
                    .is_some_and(|ids| !ids.iter().any(|i| **i == *policy.id))
            {
                Why::NotInToken
            } else if !policy.covers_action(query.action) {
                Why::ActionNotCovered
            } else if !policy
                .resources
                .iter()
                .any(|r| glob::matches_slow(r, query.resource))
            {
                Why::ResourceNotMatched
            } else if policy.effect == Effect::Deny {
                Why::Denies
            } else {
                match policy.constraints.check(query.action, &query.facts) {
                    Ok(()) => Why::Allows,
                    Err(v) => Why::Violates(v),
                }
            };
            Explained { policy, why }
        })
        .collect()
}

/// The reference evaluator: DESIGN.md §2 read literally over [`explain`]'s walk.
pub fn reference_decide<'s>(
    set: &'s PolicySet,
    who: &Principal<'_>,
    query: &Query<'_>,
) -> Decision<'s> {
    let lines = explain(set, who, query);
    if let Some(l) = lines.iter().find(|l| l.why == Why::Denies) {
        return Decision::by(Reason::ExplicitDeny, l.policy);
    }
    if let Some(l) = lines.iter().find(|l| l.why == Why::Allows) {
        return Decision::by(Reason::Allowed, l.policy);
    }
    if let Some(l) = lines.iter().find(|l| matches!(l.why, Why::Violates(_))) {
        let mut d = Decision::by(Reason::ConstraintViolated, l.policy);
        if let Why::Violates(v) = &l.why {
            d.violation = Some(v.clone());
        }
        return d;
    }
    Decision::denied(Reason::NoMatchingPolicy)
}
