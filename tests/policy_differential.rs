//! Differential property test: the indexed evaluator against the reference evaluator (a
//! literal reading of DESIGN.md §2 that walks every policy and compiles every glob with
//! globset). Random policy sets over a small alphabet, so that matches, near misses, glob
//! characters inside resource values, agent scoping, token narrowing and constraints collide
//! often. Each case checks 16 requests against one set.
//!
//! Default: 512 sets (8,192 decisions). At scale (1,048,576 decisions):
//! `PROPTEST_CASES=65536 cargo test --release --test policy_differential`

#[path = "common/policies.rs"]
mod policies;

use actgate::policy::{Facts, Policy, PolicySet, Principal, Query, reference_decide};
use proptest::prelude::*;
use proptest::sample::subsequence;

const PATTERN_SEGMENTS: &[&str] = &[
    "crm",
    "customers",
    "42",
    "*",
    "**",
    "4?",
    "{1,42}",
    "[0-9]*",
    "x*",
    "\\*",
    "c*s",
];
const RESOURCE_SEGMENTS: &[&str] = &[
    "crm",
    "customers",
    "42",
    "1",
    "*",
    "x",
    "4?",
    "{1,42}",
    "",
    "xx",
];
const ACTIONS: &[&str] = &["read", "list", "delete", "*"];
const AGENTS: &[&str] = &["agent_a", "agent_b", "agent_c"];
const RECIPIENTS: &[&str] = &[
    "a@x.com",
    "b@sub.x.com",
    "c@evil.com",
    "not-an-address",
    "D@X.COM.",
];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(list).prop_map(str::to_string)
}

fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("**".to_string()),
        1 => Just("api://crm/customers".to_string()),
        8 => prop::collection::vec(pick(PATTERN_SEGMENTS), 1..4)
            .prop_map(|s| format!("api://{}", s.join("/"))),
    ]
}

fn resource() -> impl Strategy<Value = String> {
    prop::collection::vec(pick(RESOURCE_SEGMENTS), 0..4)
        .prop_map(|s| format!("api://{}", s.join("/")))
}

fn policy_json() -> impl Strategy<Value = (String, serde_json::Value)> {
    (
        prop_oneof![4 => Just("t"), 1 => Just("u")],
        prop::option::weighted(0.3, subsequence(AGENTS, 1..=2)),
        subsequence(ACTIONS, 1..=2),
        prop::collection::vec(pattern(), 1..3),
        prop::bool::weighted(0.3),
        prop::option::of(prop_oneof![Just(50u64), Just(100u64)]),
        prop::option::of(any::<bool>()),
        prop::option::of(prop_oneof![Just("x.com"), Just("*.x.com"), Just("@x.com")]),
    )
        .prop_map(
            |(tenant, agents, actions, resources, deny, rows, ro, domain)| {
                let mut p = serde_json::json!({
                    "name": "p",
                    "actions": actions,
                    "resources": resources,
                    "effect": if deny { "deny" } else { "allow" },
                });
                if let Some(agents) = agents {
                    p["agents"] = serde_json::json!(agents);
                }
                if !deny {
                    let mut c = serde_json::Map::new();
                    if let Some(n) = rows {
                        c.insert("maxRows".into(), n.into());
                    }
                    if let Some(b) = ro {
                        c.insert("readOnly".into(), b.into());
                    }
                    if let Some(d) = domain {
                        c.insert("allowedDomains".into(), serde_json::json!([d]));
                    }
                    p["constraints"] = serde_json::Value::Object(c);
                }
                (tenant.to_string(), p)
            },
        )
}

#[derive(Debug, Clone)]
struct Ask {
    tenant: String,
    agent: String,
    narrow: Option<Vec<usize>>,
    action: String,
    resource: String,
    rows: Option<u64>,
    recipients: Option<Vec<String>>,
    method: Option<String>,
    unenforceable: (bool, bool),
}

fn ask() -> impl Strategy<Value = Ask> {
    (
        prop_oneof![4 => Just("t"), 1 => Just("u")],
        pick(&["agent_a", "agent_b", "agent_c", "agent_d"]),
        prop::option::weighted(0.2, prop::collection::vec(0usize..12, 0..3)),
        pick(&["read", "list", "delete", "query"]),
        resource(),
        prop::option::of(prop_oneof![Just(10u64), Just(75u64), Just(150u64)]),
        prop::option::weighted(0.3, prop::collection::vec(pick(RECIPIENTS), 0..3)),
        prop::option::of(pick(&["GET", "POST"])),
        (prop::bool::weighted(0.2), prop::bool::weighted(0.2)),
    )
        .prop_map(
            |(tenant, agent, narrow, action, resource, rows, recipients, method, unenforceable)| {
                Ask {
                    tenant: tenant.to_string(),
                    agent,
                    narrow,
                    action,
                    resource,
                    rows,
                    recipients,
                    method,
                    unenforceable,
                }
            },
        )
}

fn build(specs: &[(String, serde_json::Value)]) -> PolicySet {
    let list: Vec<Policy> = specs
        .iter()
        .enumerate()
        .map(|(i, (tenant, json))| policies::policy(tenant, &format!("pol_{i}"), &json.to_string()))
        .collect();
    PolicySet::build(list).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn index_agrees_with_reference(
        specs in prop::collection::vec(policy_json(), 0..12),
        asks in prop::collection::vec(ask(), 16),
    ) {
        let set = build(&specs);
        for a in &asks {
            let ids: Option<Vec<String>> = a
                .narrow
                .as_ref()
                .map(|n| n.iter().map(|i| format!("pol_{i}")).collect());
            let who = Principal { tenant: &a.tenant, agent: &a.agent, policy_ids: ids.as_deref() };
            let q = Query {
                action: &a.action,
                resource: &a.resource,
                facts: Facts {
                    rows: a.rows,
                    recipients: a.recipients.as_deref(),
                    method: a.method.as_deref(),
                    rows_unenforceable: a.unenforceable.0,
                    recipients_unenforceable: a.unenforceable.1,
                },
            };
            let fast = set.evaluate(&who, &q);
            let slow = reference_decide(&set, &who, &q);
            prop_assert_eq!(&fast, &slow, "request {:?}", a);
        }
    }
}
