//! Discovery filtering: a `tools/list`, `resources/list`, `resources/templates/list` or
//! `prompts/list` answer (and a `server/discover` answer that carries a tool list) rewritten so
//! an agent sees only what its token could be allowed for some arguments.
//!
//! Pure: no I/O. A listed tool resolves to its mapped (action, resource template) or the
//! default (`call`, `mcp://<endpoint>/tools/<tool>`); it stays when an allow policy of the
//! agent (within the token's `policyIds`) reaches some resource of it and no deny covers all
//! of it ([`crate::policy::reach`]); constraints are left to the call, whose arguments carry
//! their facts. A literal resource is decided by the indexed core, with no facts. Items whose
//! name could never be called through actgate (a name with a wildcard, `/` or control
//! character) are hidden too. The answer is marked private to the token (`cacheScope`).

use serde_json::Value;

use super::endpoint::McpEndpoint;
use super::plan::{ListKind, default_tool_resource, prompt_resource, resource_resource};
use crate::policy::reach::{Reach, Target, could_allow};
use crate::policy::{Facts, Principal, Query};
use crate::snapshot::Snapshot;

/// Who is looking, and through which endpoint.
pub struct Viewer<'a> {
    /// The snapshot deciding.
    pub snapshot: &'a Snapshot,
    /// The token's principal.
    pub who: Principal<'a>,
    /// The endpoint.
    pub ep: &'a McpEndpoint,
    /// The template/glob automata cache.
    pub reach: &'a Reach,
}

impl Viewer<'_> {
    fn literal(&self, action: &str, resource: &str) -> bool {
        self.snapshot
            .policies
            .evaluate(
                &self.who,
                &Query {
                    action,
                    resource,
                    facts: Facts::default(),
                },
            )
            .is_allowed()
    }

    /// Whether the tool `name` could be called.
    pub fn tool(&self, name: &str) -> bool {
        if !crate::config::is_tool_name(name) {
            return false;
        }
        match self.ep.tool(name) {
            None => self.literal("call", &default_tool_resource(self.ep, name)),
            Some(m) if m.resource.is_literal() => self.literal(&m.action, &m.resource.render(&[])),
            Some(m) => could_allow(
                &self.snapshot.policies,
                &self.who,
                &m.action,
                Target::Template(&m.resource.regex()),
                self.reach,
            ),
        }
    }

    /// Whether the resource `uri` could be read.
    pub fn resource(&self, uri: &str) -> bool {
        super::plan::check_uri(uri).is_ok()
            && self.literal("read", &resource_resource(self.ep, uri))
    }

    /// Whether some resource of the URI template (RFC 6570) could be read: each `{…}`
    /// expression stands for one value.
    pub fn resource_template(&self, uri_template: &str) -> bool {
        // The server writes these: a bound on what its automaton can cost.
        if uri_template.len() > 512 {
            return false;
        }
        let mut regex = String::from("^");
        regex.push_str(&regex_syntax::escape(&resource_resource(self.ep, "")));
        let mut rest = uri_template;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                return false;
            };
            regex.push_str(&regex_syntax::escape(&rest[..open]));
            regex.push_str(r"[^/%*?\[\]{}\\\x00-\x1f\x7f]+");
            rest = &rest[open + close + 1..];
        }
        regex.push_str(&regex_syntax::escape(rest));
        regex.push('$');
        could_allow(
            &self.snapshot.policies,
            &self.who,
            "read",
            Target::Template(&regex),
            self.reach,
        )
    }

    /// Whether the prompt `name` could be got.
    pub fn prompt(&self, name: &str) -> bool {
        crate::config::is_tool_name(name) && self.literal("get", &prompt_resource(self.ep, name))
    }
}

/// Keeps the entries of `result[key]` that `keep` accepts; returns how many were hidden.
fn retain(result: &mut Value, key: &str, keep: impl Fn(&Value) -> bool) -> usize {
    let Some(items) = result.get_mut(key).and_then(Value::as_array_mut) else {
        return 0;
    };
    let before = items.len();
    items.retain(|item| keep(item));
    before - items.len()
}

/// Filters a JSON-RPC response to a list request in place; returns how many entries were
/// hidden. An error response is left alone.
pub fn filter_response(kind: ListKind, response: &mut Value, viewer: &Viewer<'_>) -> usize {
    let Some(result) = response.get_mut("result").filter(|r| r.is_object()) else {
        return 0;
    };
    let str_of =
        |item: &Value, field: &str| item.get(field).and_then(Value::as_str).map(str::to_owned);
    let hidden = match kind {
        ListKind::Tools | ListKind::Discover => retain(result, "tools", |t| {
            str_of(t, "name").is_some_and(|n| viewer.tool(&n))
        }),
        ListKind::Resources => retain(result, "resources", |r| {
            str_of(r, "uri").is_some_and(|u| viewer.resource(&u))
        }),
        ListKind::ResourceTemplates => retain(result, "resourceTemplates", |r| {
            str_of(r, "uriTemplate").is_some_and(|u| viewer.resource_template(&u))
        }),
        ListKind::Prompts => retain(result, "prompts", |p| {
            str_of(p, "name").is_some_and(|n| viewer.prompt(&n))
        }),
    };
    // What this token sees is its own: no shared cache may keep it.
    if let Some(scope) = result.get_mut("cacheScope") {
        *scope = Value::String("private".into());
    }
    hidden
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn setup(policies: &str) -> (Snapshot, McpEndpoint) {
        let yaml = format!(
            r#"
upstreams: {{ crm-mcp: {{ url: "http://127.0.0.1:9/mcp" }} }}
mcp:
  - name: crm
    path: /mcp/crm
    upstream: crm-mcp
    tools:
      get_customer: {{ action: read, resource: "api://crm/customers/{{customer_id}}" }}
      send_email: {{ action: send_email, resource: "api://email/outbound", recipients: {{ arguments: [/to] }} }}
policies:
{policies}
"#
        );
        let config = crate::config::Config::parse(&yaml, "t").unwrap();
        let ep = config.mcp.endpoints()[0].clone();
        let set = crate::policy::PolicySet::build(config.policies.clone()).unwrap();
        let snapshot = Snapshot {
            policies: Arc::new(set),
            ..Snapshot::default()
        };
        (snapshot, ep)
    }

    fn visible(policies: &str, list: Value) -> Vec<String> {
        let (snapshot, ep) = setup(policies);
        let reach = Reach::default();
        let viewer = Viewer {
            snapshot: &snapshot,
            who: Principal {
                tenant: "default-tenant",
                agent: "agent_a",
                policy_ids: None,
            },
            ep: &ep,
            reach: &reach,
        };
        let mut response = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": list, "cacheScope": "public"}});
        filter_response(ListKind::Tools, &mut response, &viewer);
        assert_eq!(response["result"]["cacheScope"], "private");
        response["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn tools(names: &[&str]) -> Value {
        names
            .iter()
            .map(|n| serde_json::json!({"name": n, "inputSchema": {"type": "object"}}))
            .collect()
    }

    #[test]
    fn an_agent_sees_only_the_tools_it_could_call() {
        let all = tools(&["get_customer", "send_email", "delete_customer", "bad/name"]);
        let reads = r#"  - { name: r, actions: [read], resources: ["api://crm/customers/*"], effect: allow }"#;
        assert_eq!(visible(reads, all.clone()), ["get_customer"]);
        // A literal customer id: the templated tool can reach it, so it stays.
        let one = r#"  - { name: r, actions: [read], resources: ["api://crm/customers/42"], effect: allow }"#;
        assert_eq!(visible(one, all.clone()), ["get_customer"]);
        // Unmapped tools are `call` on mcp://crm/tools/<tool>.
        let calls = r#"  - { name: c, actions: [call], resources: ["mcp://crm/tools/*"], effect: allow }
  - { name: e, actions: [send_email], resources: ["api://email/*"], effect: allow, constraints: { allowedDomains: [yourcompany.com] } }"#;
        assert_eq!(
            visible(calls, all.clone()),
            ["send_email", "delete_customer"]
        );
        // A deny covering the whole tool hides it; one covering part of it does not.
        let deny_all = format!(
            "{reads}\n  - {{ name: d, actions: [read], resources: [\"api://crm/**\"], effect: deny }}"
        );
        assert!(visible(&deny_all, all.clone()).is_empty());
        let deny_some = format!(
            "{reads}\n  - {{ name: d, actions: [read], resources: [\"api://crm/customers/1*\"], effect: deny }}"
        );
        assert_eq!(visible(&deny_some, all.clone()), ["get_customer"]);
        assert!(
            visible("  []", all).is_empty(),
            "default deny: nothing to see"
        );
    }
}
