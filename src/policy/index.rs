//! The compiled policy index: policies grouped so a decision only looks at policies that can
//! apply to it.
//!
//! Pure: no I/O, no locks, no allocation on the decision path. Lookup order for a request:
//! tenant → agent (the agent's own policies, then the tenant-wide ones) → action (the action's
//! own, then `"*"`) → resource. Within a resource index, literal patterns sit in a hash map
//! keyed by the whole resource; glob patterns sit in buckets keyed by their literal prefix up to
//! its last `/`, so a request only hashes the prefixes of its resource that end at a `/` and
//! are the length of some bucket. One big `GlobSet` would be simpler but stops building at a
//! few thousand patterns and matches every pattern on every request.

use std::sync::Arc;

use ahash::AHashMap;

use super::glob::Pattern;
use super::model::{Effect, Facts, Policy, Violation};
use super::{Decision, Principal, Query, Reason};

/// Most (agent × action × resource) entries one policy may put in the index; validation
/// refuses policies over it.
pub const MAX_ENTRIES_PER_POLICY: usize = 10_000;

/// All policies of every tenant, compiled and indexed.
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
    tenants: AHashMap<Box<str>, TenantIndex>,
}

#[derive(Debug, Default)]
struct TenantIndex {
    any_agent: ActionIndex,
    by_agent: AHashMap<Box<str>, ActionIndex>,
}

#[derive(Debug, Default)]
struct ActionIndex {
    any_action: ResourceIndex,
    by_action: AHashMap<Box<str>, ResourceIndex>,
}

#[derive(Debug, Default)]
struct ResourceIndex {
    /// Literal patterns: resource → policy ordinals.
    exact: AHashMap<Box<str>, Vec<u32>>,
    /// Glob patterns by bucket (literal prefix up to its last `/`).
    buckets: AHashMap<Box<str>, Vec<(u32, Arc<Pattern>)>>,
    /// Distinct bucket lengths, ascending.
    bucket_lens: Vec<usize>,
}

impl ResourceIndex {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.buckets.is_empty()
    }

    fn insert(&mut self, ordinal: u32, pattern: &Arc<Pattern>) {
        if pattern.is_literal() {
            self.exact
                .entry(pattern.as_str().into())
                .or_default()
                .push(ordinal);
        } else {
            let bucket = pattern.bucket();
            if let Err(at) = self.bucket_lens.binary_search(&bucket.len()) {
                self.bucket_lens.insert(at, bucket.len());
            }
            self.buckets
                .entry(bucket.into())
                .or_default()
                .push((ordinal, Arc::clone(pattern)));
        }
    }

    /// Calls `visit` with the ordinal of every policy with a pattern matching `resource`.
    #[inline]
    fn for_each_match(&self, resource: &str, mut visit: impl FnMut(u32)) {
        if let Some(ordinals) = self.exact.get(resource) {
            ordinals.iter().copied().for_each(&mut visit);
        }
        let bytes = resource.as_bytes();
        for &len in &self.bucket_lens {
            if len > bytes.len() {
                break;
            }
            if len > 0 && bytes[len - 1] != b'/' {
                continue;
            }
            if let Some(entries) = self.buckets.get(&resource[..len]) {
                for (ordinal, pattern) in entries {
                    if pattern.is_match(resource) {
                        visit(*ordinal);
                    }
                }
            }
        }
    }
}

impl PolicySet {
    /// Compiles validated policies. Their order is their precedence when several allow (or
    /// several deny): the first one decides. Fails only on a pattern that does not compile,
    /// which validation already rules out.
    pub fn build(policies: Vec<Policy>) -> Result<PolicySet, String> {
        let mut tenants: AHashMap<Box<str>, TenantIndex> = AHashMap::new();
        for (ordinal, policy) in policies.iter().enumerate() {
            let ordinal = u32::try_from(ordinal).map_err(|_| "too many policies".to_string())?;
            let mut resources: Vec<&String> = policy.resources.iter().collect();
            resources.sort();
            resources.dedup();
            let mut actions: Vec<&String> = policy.actions.iter().collect();
            actions.sort();
            actions.dedup();
            let patterns = resources
                .into_iter()
                .map(|r| {
                    Pattern::compile(r)
                        .map(Arc::new)
                        .map_err(|e| format!("policy {}: resource {r}: {e}", policy.id))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let tenant = tenants.entry(policy.tenant.as_str().into()).or_default();
            let fill = |index_of: &mut ActionIndex| {
                for action in &actions {
                    let index = if *action == "*" {
                        &mut index_of.any_action
                    } else {
                        index_of
                            .by_action
                            .entry(action.as_str().into())
                            .or_default()
                    };
                    for pattern in &patterns {
                        index.insert(ordinal, pattern);
                    }
                }
            };
            match &policy.agents {
                None => fill(&mut tenant.any_agent),
                Some(agents) => {
                    for (i, agent) in agents.iter().enumerate() {
                        // A repeated agent is indexed once.
                        if !agents[..i].contains(agent) {
                            fill(tenant.by_agent.entry(agent.as_str().into()).or_default());
                        }
                    }
                }
            }
        }
        Ok(PolicySet { policies, tenants })
    }

    /// Every policy, in precedence order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// True when there are no policies.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Decides on the policies alone (DESIGN.md §2, steps 2–7): the caller has already
    /// checked the token. Default deny; deny wins; the first allow whose constraints hold
    /// decides; otherwise the first violated allow explains the refusal.
    pub fn evaluate<'s>(&'s self, who: &Principal<'_>, query: &Query<'_>) -> Decision<'s> {
        let Some(tenant) = self.tenants.get(who.tenant) else {
            return Decision::denied(Reason::NoMatchingPolicy);
        };
        let mut best_deny = u32::MAX;
        let mut best_allow = u32::MAX;
        let mut first_violation = u32::MAX;
        let policies = &self.policies;
        let mut visit = |ordinal: u32| {
            let policy = &policies[ordinal as usize];
            match policy.effect {
                Effect::Deny => best_deny = best_deny.min(ordinal),
                // A token narrowed to policyIds can only lose allows, never escape a deny.
                Effect::Allow
                    if who
                        .policy_ids
                        .is_some_and(|ids| !ids.iter().any(|i| **i == *policy.id)) => {}
                Effect::Allow => {
                    if ordinal < best_allow {
                        if policy.constraints.check(query.action, &query.facts).is_ok() {
                            best_allow = ordinal;
                        } else {
                            first_violation = first_violation.min(ordinal);
                        }
                    }
                }
            }
        };
        let agent_own = tenant.by_agent.get(who.agent);
        for actions in [agent_own, Some(&tenant.any_agent)].into_iter().flatten() {
            let own = actions.by_action.get(query.action);
            for index in [own, Some(&actions.any_action)].into_iter().flatten() {
                if !index.is_empty() {
                    index.for_each_match(query.resource, &mut visit);
                }
            }
        }
        if best_deny != u32::MAX {
            return Decision::by(Reason::ExplicitDeny, &self.policies[best_deny as usize]);
        }
        if best_allow != u32::MAX {
            return Decision::by(Reason::Allowed, &self.policies[best_allow as usize]);
        }
        if first_violation != u32::MAX {
            let policy = &self.policies[first_violation as usize];
            let violation = violation_of(policy, query.action, &query.facts);
            let mut d = Decision::by(Reason::ConstraintViolated, policy);
            d.violation = violation;
            return d;
        }
        Decision::denied(Reason::NoMatchingPolicy)
    }
}

fn violation_of(policy: &Policy, action: &str, facts: &Facts<'_>) -> Option<Violation> {
    policy.constraints.check(action, facts).err()
}
