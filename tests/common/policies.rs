//! Helpers to build policy sets from JSON in tests.
#![allow(dead_code)]

use actgate::error::Problems;
use actgate::policy::{Policy, PolicyInput, PolicySet, PolicySource, validate_policy};

/// A validated API policy for `tenant` with id `id`, from JSON; panics with the problems.
pub fn policy(tenant: &str, id: &str, json: &str) -> Policy {
    let input: PolicyInput = serde_json::from_str(json).expect("policy JSON");
    let mut problems = Problems::new();
    validate_policy(&input, tenant, id, PolicySource::Api, "", &mut problems)
        .unwrap_or_else(|| panic!("invalid test policy {json}: {problems}"))
}

/// A set of policies of tenant `t`, ids `pol_0`, `pol_1`, … in order.
pub fn set(jsons: &[&str]) -> PolicySet {
    PolicySet::build(
        jsons
            .iter()
            .enumerate()
            .map(|(i, j)| policy("t", &format!("pol_{i}"), j))
            .collect(),
    )
    .expect("build")
}
