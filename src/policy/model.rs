//! The policy model: what a policy says, how its input is validated, and its constraints.
//!
//! Pure: no I/O. The same validation runs for policies written in the config file and for
//! policies sent to `POST /v1/policies`, so both reject the same mistakes with the same words.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::address::{DomainRule, parse_address};
use super::glob;
use crate::error::{Problems, join};

/// Actions that `readOnly: true` lets through.
pub const READ_CLASS_ACTIONS: &[&str] = &["read", "list", "query", "get", "search"];
/// The largest `maxRows` (and row count) accepted: 2^53 − 1, the largest integer every JSON
/// client reads exactly.
pub const MAX_ROWS: u64 = (1 << 53) - 1;

/// Names of the constraints actgate knows. Anything else is a validation error.
pub const KNOWN_CONSTRAINTS: &[&str] = &["maxRows", "allowedDomains", "readOnly"];

/// Longest accepted policy name, action, agent id or resource pattern, in bytes.
const MAX_FIELD_LEN: usize = 1024;
/// Most entries accepted in one list field of a policy.
const MAX_LIST_LEN: usize = 1000;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Permits matching requests whose constraints hold.
    Allow,
    /// Refuses matching requests; always wins over allow.
    Deny,
}

/// Where a policy was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySource {
    /// The config file ("policies as code"); read-only through the API.
    Config,
    /// Created through the REST API.
    Api,
}

impl PolicySource {
    /// `config` or `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicySource::Config => "config",
            PolicySource::Api => "api",
        }
    }
}

/// A policy as submitted, before validation. Required fields are `Option` so that one pass
/// can report every missing field at once.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyInput {
    /// Optional fixed id (`pol_…`); config policies get one derived from their name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Human name, unique per tenant.
    #[serde(default)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Actions this policy covers; `"*"` is any action.
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    /// Resource globs.
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    /// `allow` or `deny`.
    #[serde(default)]
    pub effect: Option<String>,
    /// Constraint name → value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Map<String, Value>>,
    /// Agent ids this policy applies to; absent means every agent of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// `pol_…`.
    pub id: Arc<str>,
    /// Owning tenant.
    #[serde(rename = "tenantId")]
    pub tenant: String,
    /// Human name.
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Covered actions; `"*"` is any.
    pub actions: Vec<String>,
    /// Resource globs (`*` within a segment, `**` across).
    pub resources: Vec<String>,
    /// Allow or deny.
    pub effect: Effect,
    /// Conditions an allow needs to hold.
    pub constraints: Constraints,
    /// Agents in scope; `None` is every agent of the tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    /// Config file or API.
    pub source: PolicySource,
}

impl Policy {
    /// Whether the policy covers `action` (`"*"` covers every action).
    pub fn covers_action(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == "*" || a == action)
    }

    /// Whether the policy applies to `agent`.
    pub fn covers_agent(&self, agent: &str) -> bool {
        self.agents
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| a == agent))
    }
}

/// Conditions on an allow policy. Deny policies carry none.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Constraints {
    /// The request's row count must be ≤ this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// Every recipient's domain must be allowed, as written in the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_domains: Option<Vec<String>>,
    /// Only read-class actions and safe methods pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// `allowed_domains`, compiled.
    #[serde(skip)]
    domain_rules: Vec<DomainRule>,
}

/// What a request brings for the constraints to check. `None` means "not known here":
/// `/v1/enforce` leaves such constraints unchecked and returns them as obligations. The proxy
/// knows more: when its route *cannot* carry an input (no `rows` or `recipients` declared),
/// it says so, and a constraint on that input then fails — it could not be enforced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// Row count asked for.
    pub rows: Option<u64>,
    /// Recipients, as written by the caller.
    pub recipients: Option<&'a [String]>,
    /// HTTP method, when the request is an HTTP call.
    pub method: Option<&'a str>,
    /// The request has no way to carry a row count (a proxy route without `rows`).
    pub rows_unenforceable: bool,
    /// The request has no way to carry recipients (a proxy route without `recipients`).
    pub recipients_unenforceable: bool,
}

/// A constraint that did not hold, with the values that broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `maxRows`: asked for more rows than allowed.
    MaxRows {
        /// Rows requested.
        requested: u64,
        /// The policy's limit.
        limit: u64,
    },
    /// `allowedDomains`: a recipient is malformed or outside the allowed domains.
    Recipient {
        /// The recipient as given.
        recipient: String,
        /// Why it was refused.
        why: String,
    },
    /// `allowedDomains`: the request names recipients but the list is empty.
    NoRecipients,
    /// `readOnly`: the action is not read-class.
    ReadOnlyAction {
        /// The action asked for.
        action: String,
    },
    /// `readOnly`: the HTTP method is not GET or HEAD.
    ReadOnlyMethod {
        /// The method used.
        method: String,
    },
    /// `maxRows` or `allowedDomains` on a request that cannot carry its input (a proxy route
    /// without `rows` or `recipients`): it cannot be enforced, so it does not hold.
    Unenforceable {
        /// `maxRows` or `allowedDomains`.
        constraint: &'static str,
    },
}

impl Violation {
    /// The constraint's name: `maxRows`, `allowedDomains` or `readOnly`.
    pub fn constraint(&self) -> &'static str {
        match self {
            Violation::MaxRows { .. } => "maxRows",
            Violation::Recipient { .. } | Violation::NoRecipients => "allowedDomains",
            Violation::ReadOnlyAction { .. } | Violation::ReadOnlyMethod { .. } => "readOnly",
            Violation::Unenforceable { constraint } => constraint,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::MaxRows { requested, limit } => {
                write!(f, "maxRows {requested} > {limit}")
            }
            Violation::Recipient { recipient, why } => {
                write!(f, "allowedDomains: recipient {recipient:?} {why}")
            }
            Violation::NoRecipients => f.write_str("allowedDomains: the request has no recipients"),
            Violation::ReadOnlyAction { action } => {
                write!(
                    f,
                    "readOnly: action {action:?} is not one of {READ_CLASS_ACTIONS:?}"
                )
            }
            Violation::ReadOnlyMethod { method } => {
                write!(f, "readOnly: method {method} is not GET or HEAD")
            }
            Violation::Unenforceable { constraint } => write!(
                f,
                "{constraint}: this route or tool carries no {} to check; declare `{}` on the route or the MCP tool mapping",
                if *constraint == "maxRows" {
                    "row count"
                } else {
                    "recipients"
                },
                if *constraint == "maxRows" {
                    "rows"
                } else {
                    "recipients"
                }
            ),
        }
    }
}

impl Constraints {
    /// True when no constraint is set.
    pub fn is_empty(&self) -> bool {
        self.max_rows.is_none() && self.allowed_domains.is_none() && self.read_only.is_none()
    }

    /// Checks every constraint against the facts; the first broken one is returned.
    /// A fact that is `None` leaves its constraint unchecked (see [`Facts`]).
    pub fn check(&self, action: &str, facts: &Facts<'_>) -> Result<(), Violation> {
        if self.max_rows.is_some() && facts.rows.is_none() && facts.rows_unenforceable {
            return Err(Violation::Unenforceable {
                constraint: "maxRows",
            });
        }
        if self.allowed_domains.is_some()
            && facts.recipients.is_none()
            && facts.recipients_unenforceable
        {
            return Err(Violation::Unenforceable {
                constraint: "allowedDomains",
            });
        }
        if let (Some(limit), Some(requested)) = (self.max_rows, facts.rows)
            && requested > limit
        {
            return Err(Violation::MaxRows { requested, limit });
        }
        if self.allowed_domains.is_some()
            && let Some(recipients) = facts.recipients
        {
            if recipients.is_empty() {
                return Err(Violation::NoRecipients);
            }
            for r in recipients {
                match parse_address(r) {
                    Err(e) => {
                        return Err(Violation::Recipient {
                            recipient: r.clone(),
                            why: format!("is not a plain address: {e}"),
                        });
                    }
                    Ok(addr) => {
                        if !self
                            .domain_rules
                            .iter()
                            .any(|rule| rule.allows(&addr.domain))
                        {
                            return Err(Violation::Recipient {
                                recipient: r.clone(),
                                why: format!(
                                    "has domain {} which is not in allowedDomains {:?}",
                                    addr.domain,
                                    self.allowed_domains.as_deref().unwrap_or_default()
                                ),
                            });
                        }
                    }
                }
            }
        }
        if self.read_only == Some(true) {
            if !READ_CLASS_ACTIONS.contains(&action) {
                return Err(Violation::ReadOnlyAction {
                    action: action.to_string(),
                });
            }
            if let Some(method) = facts.method
                && method != "GET"
                && method != "HEAD"
            {
                return Err(Violation::ReadOnlyMethod {
                    method: method.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Validates `input` for `tenant`, recording every problem under `path`. `id` is the id the
/// policy gets when the input carries none.
pub fn validate_policy(
    input: &PolicyInput,
    tenant: &str,
    id: &str,
    source: PolicySource,
    path: &str,
    problems: &mut Problems,
) -> Option<Policy> {
    let before = problems.len();

    let id = match &input.id {
        Some(given) => {
            if !is_identifier(given, "pol_") {
                problems.push(
                    join(path, "id"),
                    "must start with `pol_` followed by letters, digits, `_` or `-`",
                );
            }
            given.clone()
        }
        None => id.to_string(),
    };

    let name = match input.name.as_deref().map(str::trim) {
        None => {
            problems.push(join(path, "name"), "required: give the policy a name");
            String::new()
        }
        Some("") => {
            problems.push(join(path, "name"), "must not be empty");
            String::new()
        }
        Some(n) if n.len() > MAX_FIELD_LEN => {
            problems.push(join(path, "name"), "longer than 1024 bytes");
            String::new()
        }
        Some(n) => n.to_string(),
    };

    let actions = input.actions.clone().unwrap_or_default();
    if input.actions.is_none() {
        problems.push(
            join(path, "actions"),
            "required: list the actions, e.g. [\"read\", \"list\"], or [\"*\"] for any",
        );
    } else {
        check_list(&actions, &join(path, "actions"), problems, |a| {
            (a == "*" || is_action(a)).then_some(()).ok_or_else(|| {
                "an action is `*` or letters, digits, `_`, `-`, `.`, `:` (e.g. `read`, `send_email`)"
                    .to_string()
            })
        });
    }

    let resources = input.resources.clone().unwrap_or_default();
    if input.resources.is_none() {
        problems.push(
            join(path, "resources"),
            "required: list resource globs, e.g. [\"api://crm/customers/*\"]",
        );
    } else {
        check_list(&resources, &join(path, "resources"), problems, |r| {
            glob::validate(r)
        });
    }

    let effect = match input.effect.as_deref() {
        Some("allow") => Some(Effect::Allow),
        Some("deny") => Some(Effect::Deny),
        Some(other) => {
            problems.push(
                join(path, "effect"),
                format!("`{other}` is not an effect; use `allow` or `deny`"),
            );
            None
        }
        None => {
            problems.push(join(path, "effect"), "required: `allow` or `deny`");
            None
        }
    };

    let constraints = match &input.constraints {
        None => Constraints::default(),
        Some(map) => {
            let c = validate_constraints(map, &join(path, "constraints"), problems);
            if effect == Some(Effect::Deny) && !map.is_empty() {
                problems.push(
                    join(path, "constraints"),
                    "deny policies carry no constraints: a deny always applies; remove them or split the policy",
                );
            }
            c
        }
    };

    if let Some(agents) = &input.agents {
        if agents.is_empty() {
            problems.push(
                join(path, "agents"),
                "an empty list applies to no agent; omit `agents` to apply to every agent of the tenant",
            );
        }
        check_list(agents, &join(path, "agents"), problems, |a| {
            is_identifier(a, "")
                .then_some(())
                .ok_or_else(|| "an agent id is letters, digits, `_` or `-`".to_string())
        });
    }

    if let Some(d) = &input.description
        && d.len() > 4 * MAX_FIELD_LEN
    {
        problems.push(join(path, "description"), "longer than 4096 bytes");
    }

    // Each (agent, action, resource) is one index entry: bound the product, so one policy
    // cannot exhaust memory at every snapshot rebuild.
    let distinct = |list: &[String]| {
        let mut v: Vec<&String> = list.iter().collect();
        v.sort();
        v.dedup();
        v.len()
    };
    let entries = input.agents.as_deref().map_or(1, distinct).max(1)
        * distinct(&actions).max(1)
        * distinct(&resources).max(1);
    if entries > super::MAX_ENTRIES_PER_POLICY {
        problems.push(
            path.to_string(),
            format!(
                "agents × actions × resources is {entries}, over {}; split the policy or use globs and \"*\"",
                super::MAX_ENTRIES_PER_POLICY
            ),
        );
    }

    if problems.len() > before {
        return None;
    }
    Some(Policy {
        id: id.into(),
        tenant: tenant.to_string(),
        name,
        description: input.description.clone(),
        actions,
        resources,
        effect: effect?,
        constraints,
        agents: input.agents.clone(),
        source,
    })
}

fn check_list(
    items: &[String],
    path: &str,
    problems: &mut Problems,
    check: impl Fn(&str) -> Result<(), String>,
) {
    if items.is_empty() {
        problems.push(path, "must list at least one entry");
    }
    if items.len() > MAX_LIST_LEN {
        problems.push(path, "more than 1000 entries");
        return;
    }
    for (i, item) in items.iter().enumerate() {
        if item.len() > MAX_FIELD_LEN {
            problems.push(format!("{path}[{i}]"), "longer than 1024 bytes");
        } else if let Err(msg) = check(item) {
            problems.push(format!("{path}[{i}]"), msg);
        }
    }
}

fn validate_constraints(
    map: &Map<String, Value>,
    path: &str,
    problems: &mut Problems,
) -> Constraints {
    let mut c = Constraints::default();
    for (key, value) in map {
        let at = join(path, key);
        match key.as_str() {
            "maxRows" => match value.as_u64() {
                Some(n) if n <= MAX_ROWS => c.max_rows = Some(n),
                _ => problems.push(
                    at,
                    format!("must be a whole number from 0 to {MAX_ROWS}, e.g. 100"),
                ),
            },
            "allowedDomains" => {
                let Some(list) = value.as_array() else {
                    problems.push(at, "must be a list of domains, e.g. [\"yourcompany.com\"]");
                    continue;
                };
                if list.is_empty() {
                    problems.push(
                        at.clone(),
                        "an empty list allows no recipient; list at least one domain",
                    );
                }
                let mut raw = Vec::with_capacity(list.len());
                for (i, entry) in list.iter().enumerate() {
                    match entry.as_str().map(DomainRule::parse) {
                        Some(Ok(rule)) => {
                            c.domain_rules.push(rule);
                            raw.push(entry.as_str().unwrap_or_default().to_string());
                        }
                        Some(Err(msg)) => problems.push(format!("{at}[{i}]"), msg),
                        None => problems.push(format!("{at}[{i}]"), "must be a string"),
                    }
                }
                c.allowed_domains = Some(raw);
            }
            "readOnly" => match value.as_bool() {
                Some(b) => c.read_only = Some(b),
                None => problems.push(at, "must be true or false"),
            },
            _ => problems.push(
                at,
                format!(
                    "unknown constraint; known: {}",
                    KNOWN_CONSTRAINTS.join(", ")
                ),
            ),
        }
    }
    c
}

/// An identifier: optional `prefix`, then 1–128 letters, digits, `_` or `-`.
pub fn is_identifier(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 128
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// An action name: letters, digits, `_`, `-`, `.`, `:`.
pub fn is_action(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// A stable id for a config policy, from its name: `Customer Support Read` →
/// `pol_customer-support-read`.
pub fn id_from_name(name: &str) -> String {
    let mut id = String::from("pol_");
    let mut dash = false;
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c.to_ascii_lowercase());
            dash = false;
        } else if !dash && id.len() > 4 {
            id.push('-');
            dash = true;
        }
    }
    while id.ends_with('-') {
        id.pop();
    }
    if id.len() == 4 {
        id.push_str("unnamed");
    }
    id.truncate(4 + 128);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> PolicyInput {
        serde_json::from_str(json).unwrap()
    }

    fn validate(json: &str) -> Result<Policy, Problems> {
        let mut problems = Problems::new();
        let p = validate_policy(
            &input(json),
            "t",
            "pol_x",
            PolicySource::Api,
            "",
            &mut problems,
        );
        p.ok_or(problems)
    }

    fn paths(problems: &Problems) -> Vec<String> {
        problems.iter().map(|p| p.path.clone()).collect()
    }

    #[test]
    fn seed_policy_is_valid() {
        let p = validate(
            r#"{"name": "Customer Support Read Policy", "actions": ["read", "list"],
                "resources": ["api://crm/customers/*"], "effect": "allow",
                "constraints": {"maxRows": 100, "allowedDomains": ["yourcompany.com"]}}"#,
        )
        .unwrap();
        assert_eq!(p.effect, Effect::Allow);
        assert_eq!(p.constraints.max_rows, Some(100));
        assert_eq!(&*p.id, "pol_x");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = validate(
            r#"{"actions": [], "resources": ["api://x/[a"], "effect": "alow",
                "constraints": {"maxRow": 1, "maxRows": -1, "allowedDomains": ["x@y"], "readOnly": "yes"},
                "agents": []}"#,
        )
        .unwrap_err();
        let got = paths(&err);
        for want in [
            "name",
            "actions",
            "resources[0]",
            "effect",
            "constraints.maxRow",
            "constraints.maxRows",
            "constraints.allowedDomains[0]",
            "constraints.readOnly",
            "agents",
        ] {
            assert!(got.contains(&want.to_string()), "missing {want} in {got:?}");
        }
        let unknown = err.iter().find(|p| p.path == "constraints.maxRow").unwrap();
        assert_eq!(
            unknown.message,
            "unknown constraint; known: maxRows, allowedDomains, readOnly"
        );
    }

    #[test]
    fn deny_policies_carry_no_constraints() {
        let err = validate(
            r#"{"name": "n", "actions": ["delete"], "resources": ["api://x/*"], "effect": "deny",
                "constraints": {"maxRows": 1}}"#,
        )
        .unwrap_err();
        assert_eq!(paths(&err), vec!["constraints"]);
    }

    #[test]
    fn unknown_fields_are_rejected_by_the_input_type() {
        let err =
            serde_json::from_str::<PolicyInput>(r#"{"name": "n", "efect": "allow"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `efect`"));
    }

    #[test]
    fn constraints_check() {
        let p = validate(
            r#"{"name": "n", "actions": ["read"], "resources": ["*"], "effect": "allow",
                "constraints": {"maxRows": 100, "allowedDomains": ["@yourcompany.com", "*.corp.example"], "readOnly": true}}"#,
        )
        .unwrap();
        let c = &p.constraints;
        let ok = Facts::default();
        assert_eq!(c.check("read", &ok), Ok(()));
        let rows = Facts {
            rows: Some(101),
            ..Facts::default()
        };
        assert_eq!(
            c.check("read", &rows),
            Err(Violation::MaxRows {
                requested: 101,
                limit: 100
            })
        );
        assert_eq!(
            c.check("read", &rows).unwrap_err().to_string(),
            "maxRows 101 > 100"
        );
        let exact = Facts {
            rows: Some(100),
            ..Facts::default()
        };
        assert_eq!(c.check("read", &exact), Ok(()));
        let good = vec![
            "a@yourcompany.com".to_string(),
            "b@eu.corp.example".to_string(),
        ];
        let facts = Facts {
            recipients: Some(&good),
            ..Facts::default()
        };
        assert_eq!(c.check("read", &facts), Ok(()));
        let bad = vec![
            "a@yourcompany.com".to_string(),
            "b@yourcompany.com.evil.com".to_string(),
        ];
        let facts = Facts {
            recipients: Some(&bad),
            ..Facts::default()
        };
        assert!(matches!(
            c.check("read", &facts),
            Err(Violation::Recipient { recipient, .. }) if recipient == "b@yourcompany.com.evil.com"
        ));
        let none: Vec<String> = vec![];
        let facts = Facts {
            recipients: Some(&none),
            ..Facts::default()
        };
        assert_eq!(c.check("read", &facts), Err(Violation::NoRecipients));
        assert!(matches!(
            c.check("delete", &ok),
            Err(Violation::ReadOnlyAction { .. })
        ));
        let post = Facts {
            method: Some("POST"),
            ..Facts::default()
        };
        assert!(matches!(
            c.check("read", &post),
            Err(Violation::ReadOnlyMethod { .. })
        ));
        let head = Facts {
            method: Some("HEAD"),
            ..Facts::default()
        };
        assert_eq!(c.check("query", &head), Ok(()));
    }

    #[test]
    fn ids_from_names() {
        assert_eq!(
            id_from_name("Customer Support Read Policy"),
            "pol_customer-support-read-policy"
        );
        assert_eq!(id_from_name("  --  "), "pol_unnamed");
        assert!(is_identifier(&id_from_name("Ünïcode & stuff!"), "pol_"));
    }
}
