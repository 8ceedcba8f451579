//! Warnings of `actgate config validate`: what validates but cannot do what it looks like
//! doing. They do not stop a start; `config validate --strict` makes them errors.
//!
//! - A policy no route or MCP tool can ever reach (no action it covers, or no resource any
//!   template can produce matches its globs): it applies to `/v1/enforce` callers only.
//! - An allow policy with `maxRows` or `allowedDomains` reached through a route or tool that
//!   cannot carry the fact (no `rows`, no recipients on a write): every such call is denied
//!   (`constraint_violated`) — the classic "validate says OK, every call answers 403".
//! - A policy naming an agent the config does not define (nor, when given, the store).
//! - Actions that differ only in case (`Read` and `read` are two actions).

use std::collections::BTreeMap;

use super::Config;
use crate::policy::Effect;
use crate::policy::reach::Reach;
use crate::proxy::route::ResourceTemplate;

/// One warning: where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// e.g. `policies[2]`.
    pub path: String,
    /// What is wrong and the fix.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What the proxy or the MCP gateway turns a request into.
struct Producer {
    what: String,
    action: String,
    resource: String,
    regex: String,
    rows: bool,
    recipients: bool,
}

fn producers(config: &Config) -> Vec<Producer> {
    let mut out = Vec::new();
    for r in config.routes.routes() {
        out.push(Producer {
            what: format!("route {}", r.name),
            action: r.action.to_string(),
            resource: r.resource.source().to_string(),
            regex: r.resource.regex(),
            rows: r.rows.is_some(),
            // A read cannot send anything; a write needs its recipients declared.
            recipients: !r.recipients.is_empty()
                || matches!(r.method, http::Method::GET | http::Method::HEAD),
        });
    }
    for ep in config.mcp.endpoints() {
        for (tool, m) in &ep.tools {
            out.push(Producer {
                what: format!("MCP tool {}/{tool}", ep.name),
                action: m.action.clone(),
                resource: m.resource.source().to_string(),
                regex: m.resource.regex(),
                rows: m.rows.is_some(),
                recipients: !m.recipients.is_empty(),
            });
        }
        // Any tool not listed: `call` on mcp://<name>/tools/<tool>.
        let template = format!("mcp://{}/tools/{{tool}}", ep.name);
        if let Ok(t) = ResourceTemplate::parse(&template, &["tool".to_string()]) {
            out.push(Producer {
                what: format!("MCP endpoint {} (unlisted tools)", ep.name),
                action: "call".into(),
                resource: template,
                regex: t.regex(),
                rows: false,
                recipients: false,
            });
        }
    }
    out
}

/// The text before the first wildcard or placeholder.
fn literal_prefix(s: &str) -> &str {
    &s[..s.find(['*', '?', '[', '{', '\\']).unwrap_or(s.len())]
}

/// The warnings of `config`; `known_agents` are agents defined elsewhere (the store).
pub fn warnings(config: &Config, known_agents: &[String]) -> Vec<Warning> {
    let mut out = Vec::new();
    let reach = Reach::default();
    let producers = producers(config);
    for (i, p) in config.policies.iter().enumerate() {
        let path = format!("policies[{i}]");
        let name = &p.name;
        if !producers.is_empty() {
            let reached: Vec<&Producer> = producers
                .iter()
                .filter(|pr| {
                    p.covers_action(&pr.action)
                        && p.resources.iter().any(|g| reach.meets(&pr.regex, g))
                })
                .collect();
            if reached.is_empty() {
                let produced: Vec<String> = producers
                    .iter()
                    .map(|pr| format!("{} {}", pr.action, pr.resource))
                    .collect();
                out.push(Warning {
                    path: path.clone(),
                    message: format!(
                        "policy {name:?} matches no request of any route or MCP tool (they produce: {}); it applies to /v1/enforce callers only — check its actions and resource globs (`*` stays within one `/` segment, `**` crosses them)",
                        produced.join(", ")
                    ),
                });
            }
            // An action some route produces, but on resources none of the globs matches
            // (`api://crm/customers/*` does not match the list resource `api://crm/customers`).
            if !reached.is_empty() {
                for action in p.actions.iter().filter(|a| *a != "*") {
                    // Only near misses: a glob and a produced resource that share their literal
                    // start (a policy for other resources is not a mistake).
                    let with_action: Vec<&Producer> = producers
                        .iter()
                        .filter(|pr| {
                            &pr.action == action
                                && p.resources.iter().any(|g| {
                                    let (a, b) = (literal_prefix(g), literal_prefix(&pr.resource));
                                    a.starts_with(b) || b.starts_with(a)
                                })
                        })
                        .collect();
                    if !with_action.is_empty() && !reached.iter().any(|pr| &pr.action == action) {
                        let seen: Vec<String> = with_action
                            .iter()
                            .map(|pr| format!("{} on {}", pr.what, pr.resource))
                            .collect();
                        out.push(Warning {
                            path: path.clone(),
                            message: format!(
                                "policy {name:?} lists action {action:?}, but none of its resource globs matches what produces it ({}); add that resource (e.g. {:?})",
                                seen.join(", "),
                                with_action[0].resource
                            ),
                        });
                    }
                }
            }
            if p.effect == Effect::Allow {
                for pr in &reached {
                    if p.constraints.max_rows.is_some() && !pr.rows {
                        out.push(Warning {
                            path: path.clone(),
                            message: format!(
                                "policy {name:?} has maxRows, but {} does not say how many rows a call returns, so every call through it is denied (constraint_violated); give it `rows: {{ fixed: 1 }}` (one object) or `rows: {{ query: limit }}`",
                                pr.what
                            ),
                        });
                    }
                    if p.constraints.allowed_domains.is_some() && !pr.recipients {
                        out.push(Warning {
                            path: path.clone(),
                            message: format!(
                                "policy {name:?} has allowedDomains, but {} does not name where its recipients are, so every call through it is denied (constraint_violated); give it `recipients:`",
                                pr.what
                            ),
                        });
                    }
                }
            }
        }
        for agent in p.agents.iter().flatten() {
            let defined = config.agents.iter().any(|a| &a.id == agent)
                || known_agents.iter().any(|a| a == agent);
            if !defined {
                out.push(Warning {
                    path: path.clone(),
                    message: format!(
                        "policy {name:?} names agent {agent:?}, which neither the config's agents nor the store define: a typo, or an agent still to create (POST /v1/agents with \"id\": {agent:?})"
                    ),
                });
            }
        }
    }
    // Actions differing only in case.
    let mut by_lower: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let actions = config
        .policies
        .iter()
        .flat_map(|p| p.actions.iter().cloned())
        .chain(producers.iter().map(|p| p.action.clone()));
    for a in actions.filter(|a| a != "*") {
        let v = by_lower.entry(a.to_lowercase()).or_default();
        if !v.contains(&a) {
            v.push(a);
        }
    }
    for variants in by_lower.values().filter(|v| v.len() > 1) {
        out.push(Warning {
            path: "policies".into(),
            message: format!(
                "actions {} differ only in case: actions are case-sensitive, so they are different actions; write one spelling",
                variants.join(", ")
            ),
        });
    }
    out
}
