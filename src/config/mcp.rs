//! The `mcp:` section: validation of each MCP endpoint and its tool mapping, reporting every
//! problem with its path, compiled into [`crate::mcp::endpoint::McpTable`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use http::Method;
use serde_yaml::Value;

use super::raw::{RawMcp, RawTool};
use super::{HOUR, Upstream, duration_in, required, typed_list};
use crate::error::{Problems, index, join};
use crate::mcp::endpoint::{McpEndpoint, McpTable, ToolMapping, ToolRows};
use crate::policy::model::{is_action, is_identifier};
use crate::proxy::route::{Mode, ResourceTemplate, RouteTable};

/// Methods decided by policy, never merely allowed by name.
const DECIDED: &[&str] = &["tools/call", "resources/read", "prompts/get"];

/// Whether `name` can be a tool name here: 1–128 bytes, none of `/ * ? [ ] { } \`, whitespace
/// or control characters (the name is data inside `mcp://<endpoint>/tools/<name>`).
pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.chars().any(|c| {
            matches!(c, '/' | '*' | '?' | '[' | ']' | '{' | '}' | '\\')
                || c.is_whitespace()
                || c.is_control()
        })
}

fn is_pointer(p: &str) -> bool {
    p.starts_with('/') && p.len() <= 256
}

pub(super) fn compile(
    v: Option<Value>,
    upstreams: &BTreeMap<String, Upstream>,
    declared: &HashSet<String>,
    routes: &RouteTable,
    p: &mut Problems,
) -> McpTable {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for (i, raw) in typed_list::<RawMcp>(v, "mcp", p).into_iter().enumerate() {
        let at = index("mcp", i);
        let Some(raw) = raw else { continue };
        let before = p.len();
        let name = required(&raw.name, join(&at, "name"), "name the server, e.g. crm", p);
        if let Some(n) = name {
            if !is_identifier(n, "") {
                p.push(
                    join(&at, "name"),
                    "an MCP entry's name is letters, digits, `_` or `-` (it is part of its resources and a metric label)",
                );
            }
            if !names.insert(n.to_string()) {
                p.push(join(&at, "name"), format!("duplicate MCP entry name `{n}`"));
            }
        }
        let path = required(&raw.path, join(&at, "path"), "e.g. /mcp/crm", p);
        if let Some(path) = path {
            check_path(path, &at, routes, p);
            if !paths.insert(path.to_string()) {
                p.push(
                    join(&at, "path"),
                    format!("another MCP entry serves {path}"),
                );
            }
        }
        let upstream = required(
            &raw.upstream,
            join(&at, "upstream"),
            "name one of `upstreams`: its url is the server's MCP endpoint (e.g. http://127.0.0.1:9100/mcp), or a command for a stdio server",
            p,
        );
        if let Some(u) = upstream
            && !upstreams.contains_key(u)
            && !declared.contains(u)
        {
            let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            p.push(
                join(&at, "upstream"),
                format!("unknown upstream `{u}`; known: {}", known.join(", ")),
            );
        }
        let mut tools = HashMap::new();
        for (tool, mapping) in raw.tools.unwrap_or_default() {
            let tat = format!("{at}.tools.{tool}");
            if !is_tool_name(&tool) {
                p.push(
                    tat.clone(),
                    "a tool name is 1–128 characters without `/ * ? [ ] { } \\`, spaces or control characters",
                );
            }
            if let Some(m) = compile_tool(mapping, &tat, p) {
                tools.insert(tool, m);
            }
        }
        let mode = match raw.mode.as_deref() {
            None | Some("enforce") => Mode::Enforce,
            Some("monitor") => Mode::Monitor,
            Some(other) => {
                p.push(
                    join(&at, "mode"),
                    format!("`{other}` is not a mode; use `enforce` or `monitor`"),
                );
                Mode::Enforce
            }
        };
        let allow_methods = raw.allow_methods.unwrap_or_default();
        for (j, m) in allow_methods.iter().enumerate() {
            let mat = format!("{at}.allowMethods[{j}]");
            if DECIDED.contains(&m.as_str()) {
                p.push(
                    mat,
                    format!(
                        "{m} is decided by policy for every call; it cannot be allowed by name"
                    ),
                );
            } else if m.is_empty()
                || m.len() > 128
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
            {
                p.push(mat, "a JSON-RPC method name, e.g. subscriptions/listen");
            }
        }
        let sse_idle_timeout = raw
            .sse_idle_timeout
            .map_or(Duration::from_secs(300), |d| d.0);
        duration_in(
            p,
            &join(&at, "sseIdleTimeout"),
            sse_idle_timeout,
            Duration::from_secs(1),
            24 * HOUR,
        );
        // A legacy session of a stdio server is a process of its own: a small default.
        let stdio = upstream
            .and_then(|u| upstreams.get(u))
            .is_some_and(|u| matches!(u.target, super::UpstreamTarget::Stdio(_)));
        let max_sessions = raw.max_sessions.unwrap_or(if stdio { 32 } else { 10_000 });
        if !(1..=1_000_000).contains(&max_sessions) {
            p.push(join(&at, "maxSessions"), "must be between 1 and 1000000");
        }
        let max_sessions_per_agent = raw.max_sessions_per_agent.unwrap_or(8);
        if !(1..=10_000).contains(&max_sessions_per_agent) {
            p.push(
                join(&at, "maxSessionsPerAgent"),
                "must be between 1 and 10000",
            );
        }
        let session_idle_timeout = raw.session_idle_timeout.map_or(HOUR, |d| d.0);
        duration_in(
            p,
            &join(&at, "sessionIdleTimeout"),
            session_idle_timeout,
            Duration::from_secs(60),
            7 * 24 * HOUR,
        );
        if p.len() > before {
            continue;
        }
        if let (Some(name), Some(path), Some(upstream)) = (name, path, upstream) {
            out.push(McpEndpoint {
                name: name.to_string(),
                log_route: format!("mcp:{name}").into(),
                path: path.to_string(),
                upstream: upstream.to_string(),
                tools,
                mode,
                allow_methods,
                sse_idle_timeout,
                max_sessions: max_sessions as usize,
                max_sessions_per_agent: max_sessions_per_agent as usize,
                session_idle_timeout,
            });
        }
    }
    McpTable::new(out)
}

fn check_path(path: &str, at: &str, routes: &RouteTable, p: &mut Problems) {
    let at = join(at, "path");
    if !path.starts_with('/') || path.contains(['{', '}', '?', '#']) {
        p.push(at, "a literal path starting with `/`, e.g. /mcp/crm");
        return;
    }
    if let Err(e) = crate::proxy::canonical::canonical_path(path) {
        p.push(at, format!("not canonical: {e}"));
        return;
    }
    if path.starts_with("/.well-known/") {
        p.push(
            at,
            "/.well-known/ is where actgate serves the endpoint's metadata",
        );
        return;
    }
    for method in [Method::GET, Method::POST, Method::DELETE] {
        if let Some(m) = routes.find(&method, path) {
            p.push(
                at.clone(),
                format!(
                    "route {} also serves {method} {path}; give the MCP entry its own path",
                    m.route.name
                ),
            );
            return;
        }
    }
}

fn compile_tool(raw: RawTool, at: &str, p: &mut Problems) -> Option<ToolMapping> {
    let before = p.len();
    let action = required(&raw.action, join(at, "action"), "e.g. read", p);
    if let Some(a) = action
        && !is_action(a)
    {
        p.push(
            join(at, "action"),
            "an action is letters, digits, `_`, `-`, `.` or `:`",
        );
    }
    let resource = required(
        &raw.resource,
        join(at, "resource"),
        "e.g. api://crm/customers/{customer_id} (placeholders take top-level arguments)",
        p,
    )
    .and_then(|r| match ResourceTemplate::parse_free(r) {
        Ok(t) => Some(t),
        Err(e) => {
            p.push(join(at, "resource"), e);
            None
        }
    });
    let rows = match raw.rows.map(|r| (r.argument, r.fixed)) {
        None => None,
        Some((Some(ptr), None)) => {
            if !is_pointer(&ptr) {
                p.push(
                    join(at, "rows.argument"),
                    "a JSON pointer into the arguments, e.g. /limit",
                );
            }
            Some(ToolRows::Argument(ptr))
        }
        Some((None, Some(n))) => {
            if n > crate::policy::model::MAX_ROWS {
                p.push(
                    join(at, "rows.fixed"),
                    format!("must be at most {}", crate::policy::model::MAX_ROWS),
                );
            }
            Some(ToolRows::Fixed(n))
        }
        Some(_) => {
            p.push(
                join(at, "rows"),
                "give exactly one of `argument: <JSON pointer>` (the call says how many rows) or `fixed: <n>` (the tool returns at most n, e.g. 1 for a single object)",
            );
            None
        }
    };
    let recipients = raw.recipients.map(|r| r.arguments).unwrap_or_default();
    for (j, r) in recipients.iter().enumerate() {
        if !is_pointer(r) {
            p.push(
                format!("{at}.recipients.arguments[{j}]"),
                "a JSON pointer into the arguments, e.g. /to",
            );
        }
    }
    if recipients.len() > 64 {
        p.push(join(at, "recipients.arguments"), "at most 64 pointers");
    }
    if p.len() > before {
        return None;
    }
    let (resource, params) = resource?;
    Some(ToolMapping {
        action: action?.to_string(),
        resource,
        params,
        rows,
        recipients,
    })
}
