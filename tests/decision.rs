//! Every rule of DESIGN.md §2, one test each, through the indexed evaluator, with the
//! reference evaluator asked the same question every time.

#[path = "common/policies.rs"]
mod policies;

use actgate::policy::{
    Decision, Facts, PolicySet, Principal, Query, Reason, Violation, reference_decide,
};
use policies::set;

const WHO: Principal<'static> = Principal {
    tenant: "t",
    agent: "agent_a",
    policy_ids: None,
};

fn decide<'s>(
    set: &'s PolicySet,
    who: &Principal<'_>,
    action: &str,
    resource: &str,
    facts: Facts<'_>,
) -> Decision<'s> {
    let q = Query {
        action,
        resource,
        facts,
    };
    let fast = set.evaluate(who, &q);
    let slow = reference_decide(set, who, &q);
    assert_eq!(
        fast, slow,
        "index and reference disagree on {action} {resource}"
    );
    fast
}

fn ask<'s>(set: &'s PolicySet, action: &str, resource: &str) -> Decision<'s> {
    decide(set, &WHO, action, resource, Facts::default())
}

fn pid(d: &Decision<'_>) -> Option<String> {
    d.policy.map(|p| p.id.to_string())
}

const SEED: &str = r#"{"name": "Customer Support Read Policy", "actions": ["read", "list"],
    "resources": ["api://crm/customers/*"], "effect": "allow",
    "constraints": {"maxRows": 100, "allowedDomains": ["yourcompany.com"]}}"#;

#[test]
fn seed_quickstart_reads_are_allowed_and_deletes_denied() {
    let s = set(&[SEED]);
    let d = ask(&s, "read", "api://crm/customers/123");
    assert_eq!(d.reason, Reason::Allowed);
    assert_eq!(pid(&d).as_deref(), Some("pol_0"));
    assert_eq!(
        ask(&s, "delete", "api://crm/customers/123").reason,
        Reason::NoMatchingPolicy
    );
}

#[test]
fn no_policies_is_default_deny() {
    let s = set(&[]);
    let d = ask(&s, "read", "api://crm/customers/1");
    assert_eq!(d.reason, Reason::NoMatchingPolicy);
    assert!(d.policy.is_none());
    assert!(!d.is_allowed());
}

#[test]
fn action_must_be_listed_or_star() {
    let s = set(&[
        r#"{"name": "a", "actions": ["read"], "resources": ["api://x/*"], "effect": "allow"}"#,
    ]);
    assert_eq!(
        ask(&s, "write", "api://x/1").reason,
        Reason::NoMatchingPolicy
    );
    let s =
        set(&[r#"{"name": "a", "actions": ["*"], "resources": ["api://x/*"], "effect": "allow"}"#]);
    assert_eq!(ask(&s, "write", "api://x/1").reason, Reason::Allowed);
    assert_eq!(
        ask(&s, "anything-at-all", "api://x/1").reason,
        Reason::Allowed
    );
}

#[test]
fn star_matches_one_segment_and_double_star_many() {
    let s = set(&[
        r#"{"name": "a", "actions": ["read"], "resources": ["api://crm/customers/*"], "effect": "allow"}"#,
    ]);
    assert!(ask(&s, "read", "api://crm/customers/42").is_allowed());
    assert!(!ask(&s, "read", "api://crm/customers/42/notes").is_allowed());
    assert!(!ask(&s, "read", "api://crm/customers").is_allowed());
    let s = set(&[
        r#"{"name": "a", "actions": ["read"], "resources": ["api://crm/**"], "effect": "allow"}"#,
    ]);
    assert!(ask(&s, "read", "api://crm/customers/42/notes").is_allowed());
    assert!(!ask(&s, "read", "api://crmx/customers").is_allowed());
}

#[test]
fn resource_values_with_glob_characters_cannot_widen_a_match() {
    let s = set(&[
        r#"{"name": "one", "actions": ["read"], "resources": ["api://crm/customers/42"], "effect": "allow"}"#,
    ]);
    for r in [
        "api://crm/customers/*",
        "api://crm/customers/4?",
        "api://crm/customers/[0-9]2",
        "api://crm/customers/{42,43}",
        "api://crm/customers/**",
        "api://crm/*/42",
    ] {
        assert_eq!(ask(&s, "read", r).reason, Reason::NoMatchingPolicy, "{r}");
    }
    // A `*` in the value is one character within one segment, never a separator.
    let s = set(&[
        r#"{"name": "seg", "actions": ["read"], "resources": ["api://crm/customers/*"], "effect": "allow"}"#,
    ]);
    assert!(!ask(&s, "read", "api://crm/customers/*/notes").is_allowed());
}

#[test]
fn deny_with_no_allow_is_explicit_deny() {
    let s = set(&[
        r#"{"name": "no", "actions": ["delete"], "resources": ["api://crm/**"], "effect": "deny"}"#,
    ]);
    let d = ask(&s, "delete", "api://crm/customers/1");
    assert_eq!(d.reason, Reason::ExplicitDeny);
    assert_eq!(pid(&d).as_deref(), Some("pol_0"));
}

#[test]
fn deny_wins_over_allow_in_either_order() {
    let allow =
        r#"{"name": "yes", "actions": ["*"], "resources": ["api://crm/**"], "effect": "allow"}"#;
    let deny = r#"{"name": "no", "actions": ["delete"], "resources": ["api://crm/customers/*"], "effect": "deny"}"#;
    for (order, deny_id) in [([allow, deny], "pol_1"), ([deny, allow], "pol_0")] {
        let s = set(&order);
        let d = ask(&s, "delete", "api://crm/customers/1");
        assert_eq!(d.reason, Reason::ExplicitDeny);
        assert_eq!(pid(&d).as_deref(), Some(deny_id));
        assert!(ask(&s, "read", "api://crm/customers/1").is_allowed());
    }
}

#[test]
fn a_broken_allow_does_not_hide_another_allow_that_holds() {
    let s = set(&[
        r#"{"name": "small", "actions": ["list"], "resources": ["api://crm/customers"], "effect": "allow", "constraints": {"maxRows": 100}}"#,
        r#"{"name": "big", "actions": ["list"], "resources": ["api://crm/*"], "effect": "allow", "constraints": {"maxRows": 1000}}"#,
    ]);
    let facts = Facts {
        rows: Some(500),
        ..Facts::default()
    };
    let d = decide(&s, &WHO, "list", "api://crm/customers", facts);
    assert_eq!(d.reason, Reason::Allowed);
    assert_eq!(pid(&d).as_deref(), Some("pol_1"));
}

#[test]
fn when_every_allow_breaks_a_constraint_the_first_is_named_with_values() {
    let s = set(&[
        r#"{"name": "small", "actions": ["list"], "resources": ["api://crm/customers"], "effect": "allow", "constraints": {"maxRows": 100}}"#,
        r#"{"name": "big", "actions": ["list"], "resources": ["api://crm/*"], "effect": "allow", "constraints": {"maxRows": 200}}"#,
    ]);
    let facts = Facts {
        rows: Some(500),
        ..Facts::default()
    };
    let d = decide(&s, &WHO, "list", "api://crm/customers", facts);
    assert_eq!(d.reason, Reason::ConstraintViolated);
    assert_eq!(pid(&d).as_deref(), Some("pol_0"));
    assert_eq!(
        d.violation,
        Some(Violation::MaxRows {
            requested: 500,
            limit: 100
        })
    );
    assert!(d.message().contains("maxRows 500 > 100"), "{}", d.message());
}

#[test]
fn the_first_matching_allow_in_order_decides() {
    let s = set(&[
        r#"{"name": "first", "actions": ["read"], "resources": ["api://crm/**"], "effect": "allow"}"#,
        r#"{"name": "second", "actions": ["read"], "resources": ["api://crm/customers/1"], "effect": "allow"}"#,
    ]);
    assert_eq!(
        pid(&ask(&s, "read", "api://crm/customers/1")).as_deref(),
        Some("pol_0")
    );
}

#[test]
fn agent_scoped_policies_apply_only_to_their_agents() {
    let s = set(&[
        r#"{"name": "a only", "actions": ["read"], "resources": ["api://x/*"], "effect": "allow", "agents": ["agent_a"]}"#,
        r#"{"name": "ghost", "actions": ["write"], "resources": ["api://x/*"], "effect": "allow", "agents": ["agent_unknown"]}"#,
    ]);
    let b = Principal {
        agent: "agent_b",
        ..WHO
    };
    assert!(ask(&s, "read", "api://x/1").is_allowed());
    assert_eq!(
        decide(&s, &b, "read", "api://x/1", Facts::default()).reason,
        Reason::NoMatchingPolicy
    );
    // A policy naming an agent that does not exist applies to nobody else.
    assert_eq!(
        ask(&s, "write", "api://x/1").reason,
        Reason::NoMatchingPolicy
    );
    assert_eq!(
        decide(&s, &b, "write", "api://x/1", Facts::default()).reason,
        Reason::NoMatchingPolicy
    );
}

#[test]
fn token_policy_ids_narrow_the_allows_but_every_deny_still_applies() {
    let s = set(&[
        r#"{"name": "read", "actions": ["read"], "resources": ["api://x/*"], "effect": "allow"}"#,
        r#"{"name": "deny", "actions": ["read"], "resources": ["api://x/secret"], "effect": "deny"}"#,
        r#"{"name": "list", "actions": ["list"], "resources": ["api://x/*"], "effect": "allow"}"#,
    ]);
    let only_read = vec!["pol_0".to_string()];
    let narrowed = Principal {
        policy_ids: Some(&only_read),
        ..WHO
    };
    assert!(decide(&s, &narrowed, "read", "api://x/1", Facts::default()).is_allowed());
    // The allow outside the token's set no longer applies...
    assert_eq!(
        decide(&s, &narrowed, "list", "api://x/1", Facts::default()).reason,
        Reason::NoMatchingPolicy
    );
    // ...but a deny outside it does: narrowing can only take permissions away.
    let d = decide(&s, &narrowed, "read", "api://x/secret", Facts::default());
    assert_eq!(d.reason, Reason::ExplicitDeny);
    assert_eq!(pid(&d).as_deref(), Some("pol_1"));
    let none: Vec<String> = vec![];
    let empty = Principal {
        policy_ids: Some(&none),
        ..WHO
    };
    assert_eq!(
        decide(&s, &empty, "read", "api://x/1", Facts::default()).reason,
        Reason::NoMatchingPolicy
    );
}

#[test]
fn a_policy_cannot_explode_the_index() {
    let agents: Vec<String> = (0..200).map(|i| format!("agent_{i}")).collect();
    let actions: Vec<String> = (0..200).map(|i| format!("a{i}")).collect();
    let json = serde_json::json!({"name": "huge", "agents": agents, "actions": actions,
        "resources": ["api://x/*"], "effect": "allow"});
    let input: actgate::policy::PolicyInput = serde_json::from_value(json).unwrap();
    let mut problems = actgate::error::Problems::new();
    let p = actgate::policy::validate_policy(
        &input,
        "t",
        "pol_x",
        actgate::policy::PolicySource::Api,
        "",
        &mut problems,
    );
    assert!(p.is_none());
    assert!(
        problems
            .to_string()
            .contains("agents × actions × resources is 40000"),
        "{problems}"
    );
    // Repeats count once.
    let json = serde_json::json!({"name": "repeats", "actions": vec!["read"; 1000],
        "resources": vec!["api://x/*"; 1000], "effect": "allow"});
    let input: actgate::policy::PolicyInput = serde_json::from_value(json).unwrap();
    let mut problems = actgate::error::Problems::new();
    assert!(
        actgate::policy::validate_policy(
            &input,
            "t",
            "pol_y",
            actgate::policy::PolicySource::Api,
            "",
            &mut problems
        )
        .is_some()
    );
}

#[test]
fn tenants_do_not_see_each_others_policies() {
    let s = set(&[r#"{"name": "t", "actions": ["*"], "resources": ["**"], "effect": "allow"}"#]);
    let other = Principal {
        tenant: "other",
        ..WHO
    };
    assert_eq!(
        decide(&s, &other, "read", "api://x", Facts::default()).reason,
        Reason::NoMatchingPolicy
    );
}

#[test]
fn read_only_refuses_writes_by_action_and_by_method() {
    let s = set(&[
        r#"{"name": "ro", "actions": ["*"], "resources": ["api://analytics/*"], "effect": "allow", "constraints": {"readOnly": true}}"#,
    ]);
    for action in ["read", "list", "query", "get", "search"] {
        assert!(
            ask(&s, action, "api://analytics/sales").is_allowed(),
            "{action}"
        );
    }
    let d = ask(&s, "update", "api://analytics/sales");
    assert_eq!(d.reason, Reason::ConstraintViolated);
    assert_eq!(
        d.violation.as_ref().map(Violation::constraint),
        Some("readOnly")
    );
    let post = Facts {
        method: Some("POST"),
        ..Facts::default()
    };
    assert_eq!(
        decide(&s, &WHO, "query", "api://analytics/sales", post).reason,
        Reason::ConstraintViolated
    );
}

#[test]
fn allowed_domains_checks_every_recipient() {
    let s = set(&[
        r#"{"name": "mail", "actions": ["send_email"], "resources": ["api://email/*"], "effect": "allow", "constraints": {"allowedDomains": ["@yourcompany.com"]}}"#,
    ]);
    let send = |list: &[&str]| {
        let owned: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        let facts = Facts {
            recipients: Some(&owned),
            ..Facts::default()
        };
        decide(&s, &WHO, "send_email", "api://email/outbound", facts).reason
    };
    assert_eq!(send(&["bob@yourcompany.com"]), Reason::Allowed);
    assert_eq!(send(&["Bob@YOURCOMPANY.com."]), Reason::Allowed);
    assert_eq!(
        send(&["bob@yourcompany.com", "eve@evil.com"]),
        Reason::ConstraintViolated
    );
    assert_eq!(
        send(&["bob@yourcompany.com.evil.com"]),
        Reason::ConstraintViolated
    );
    assert_eq!(
        send(&["Bob <bob@yourcompany.com>"]),
        Reason::ConstraintViolated
    );
    assert_eq!(
        send(&["eve@evil.com@yourcompany.com"]),
        Reason::ConstraintViolated
    );
    assert_eq!(send(&[]), Reason::ConstraintViolated);
}

#[test]
fn missing_facts_leave_constraints_unchecked() {
    // `/v1/enforce` with `context: {}`: maxRows and allowedDomains are obligations, not checks.
    let s = set(&[SEED]);
    let d = ask(&s, "list", "api://crm/customers/1");
    assert!(d.is_allowed());
    assert_eq!(d.policy.unwrap().constraints.max_rows, Some(100));
}

#[test]
fn reason_codes_are_the_documented_ones() {
    let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        codes,
        [
            "allowed",
            "token_missing",
            "token_invalid",
            "token_expired",
            "token_revoked",
            "agent_revoked",
            "tenant_mismatch",
            "sender_mismatch",
            "explicit_deny",
            "constraint_violated",
            "no_matching_policy",
            "internal_error",
            "store_unavailable"
        ]
    );
}
