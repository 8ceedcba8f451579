//! What one MCP message needs before it may pass: a decision on an (action, resource) with
//! facts, only a valid token, or nothing — it is not forwarded at all.
//!
//! Pure: no I/O. `tools/call` maps through the endpoint's tool mapping (a tool not listed is
//! `call` on `mcp://<endpoint>/tools/<tool>`), its resource's placeholders filled from
//! top-level arguments as data (a value with `/`, a wildcard or a control character is
//! refused), `rows` and `recipients` read by JSON pointer; `resources/read` is `read` on
//! `mcp://<endpoint>/resources/<uri>`, `prompts/get` is `get` on
//! `mcp://<endpoint>/prompts/<name>`. The handshake, discovery, lists, `ping`, notifications,
//! responses to server requests and the endpoint's `allowMethods` need only a valid token.
//! Anything else is not forwarded.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::endpoint::{McpEndpoint, ToolRows};
use super::jsonrpc::{Kind, Malformed, Message, code};
use crate::config::is_tool_name;
use crate::policy::model::MAX_ROWS;
use crate::proxy::route::is_placeholder_value;

/// A list answer actgate filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`.
    Tools,
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    ResourceTemplates,
    /// `prompts/list`.
    Prompts,
    /// `server/discover` (filtered if its answer carries a tool list).
    Discover,
}

/// A call decided by policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// The tool, for `tools/call`.
    pub tool: Option<String>,
    /// The row count the arguments ask for (`maxRows`).
    pub rows: Option<u64>,
    /// Where the row count goes when the arguments give none and a policy sets it.
    pub rows_pointer: Option<String>,
    /// The recipients the arguments name (`allowedDomains`), when the tool declares where.
    pub recipients: Option<Vec<String>>,
    /// `maxRows` cannot be checked: the tool declares no row argument.
    pub rows_unenforceable: bool,
    /// `allowedDomains` cannot be checked: the tool declares no recipient arguments.
    pub recipients_unenforceable: bool,
    /// Hex SHA-256 of the arguments as canonical JSON (keys sorted, no whitespace).
    pub arguments_sha256: Option<String>,
}

/// What a message needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// A decision.
    Decide(Call),
    /// A valid token; a list answer is filtered.
    TokenOnly {
        /// The list to filter in the answer.
        list: Option<ListKind>,
    },
    /// Not forwarded: the method is neither decided nor allowed.
    NotAllowed,
}

/// The resource of a tool with no mapping.
pub fn default_tool_resource(ep: &McpEndpoint, tool: &str) -> String {
    format!("mcp://{}/tools/{tool}", ep.name)
}

/// The resource of an MCP resource.
pub fn resource_resource(ep: &McpEndpoint, uri: &str) -> String {
    format!("mcp://{}/resources/{uri}", ep.name)
}

/// The resource of a prompt.
pub fn prompt_resource(ep: &McpEndpoint, name: &str) -> String {
    format!("mcp://{}/prompts/{name}", ep.name)
}

fn invalid(msg: &Message, message: impl Into<String>) -> Malformed {
    Malformed {
        code: code::INVALID_PARAMS,
        message: message.into(),
        id: msg.id(),
    }
}

/// The canonical SHA-256 of a JSON value: serialized with sorted keys (serde_json's map
/// order) and no whitespace.
pub fn canonical_sha256(v: &Value) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(v).unwrap_or_default().as_slice(),
    ))
}

/// What `msg` needs on endpoint `ep`; an error for params that cannot be read as one thing.
pub fn plan(ep: &McpEndpoint, msg: &Message) -> Result<Plan, Malformed> {
    let method = match &msg.kind {
        Kind::Response { .. } => return Ok(Plan::TokenOnly { list: None }),
        Kind::Notification { method } if method.starts_with("notifications/") => {
            return Ok(Plan::TokenOnly { list: None });
        }
        Kind::Request { method, .. } | Kind::Notification { method } => method.as_str(),
    };
    let list = match method {
        "tools/call" => return tool_call(ep, msg).map(Plan::Decide),
        "resources/read" => {
            let uri = match msg.params().get("uri") {
                Some(Value::String(u)) if !u.is_empty() && u.len() <= 4096 => u,
                _ => {
                    return Err(invalid(
                        msg,
                        "params.uri must be a resource URI (1–4096 bytes)",
                    ));
                }
            };
            if uri
                .chars()
                .any(|c| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') || c.is_control())
            {
                return Err(invalid(
                    msg,
                    "params.uri holds a wildcard or control character; a resource URI is data, not a pattern",
                ));
            }
            return Ok(Plan::Decide(Call {
                action: "read".into(),
                resource: resource_resource(ep, uri),
                tool: None,
                rows: None,
                rows_pointer: None,
                recipients: None,
                rows_unenforceable: true,
                recipients_unenforceable: false,
                arguments_sha256: None,
            }));
        }
        "prompts/get" => {
            let name = match msg.params().get("name") {
                Some(Value::String(n)) if is_tool_name(n) => n,
                _ => {
                    return Err(invalid(
                        msg,
                        "params.name must be a prompt name: 1–128 characters without `/ * ? [ ] { } \\`, spaces or control characters",
                    ));
                }
            };
            let args = msg.params().get("arguments");
            return Ok(Plan::Decide(Call {
                action: "get".into(),
                resource: prompt_resource(ep, name),
                tool: None,
                rows: None,
                rows_pointer: None,
                recipients: None,
                rows_unenforceable: true,
                recipients_unenforceable: false,
                arguments_sha256: args.map(canonical_sha256),
            }));
        }
        "tools/list" => Some(ListKind::Tools),
        "resources/list" => Some(ListKind::Resources),
        "resources/templates/list" => Some(ListKind::ResourceTemplates),
        "prompts/list" => Some(ListKind::Prompts),
        "server/discover" => Some(ListKind::Discover),
        "initialize" | "ping" => None,
        m if ep.allow_methods.iter().any(|a| a == m) => None,
        _ => return Ok(Plan::NotAllowed),
    };
    Ok(Plan::TokenOnly { list })
}

/// A resource URI actgate decides on must have one reading: it is compared as written, so
/// anything a server could normalise into another URI is refused — a scheme or authority not
/// in lower case, a percent-escape, a `.` or `..` segment, an empty segment (`//` in the
/// path), a backslash, a wildcard or a control character.
pub fn check_uri(uri: &str) -> Result<(), &'static str> {
    if uri.chars().any(|c| {
        matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '%' | '#')
            || c.is_control()
            || c.is_whitespace()
    }) {
        return Err(
            "holds a wildcard, `%`, `#`, `\\`, a space or a control character; a resource URI is data, compared as written",
        );
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err("is not a URI (scheme:...)");
    };
    if scheme.is_empty()
        || !scheme.starts_with(|c: char| c.is_ascii_lowercase())
        || !scheme.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'-')
        })
    {
        return Err("its scheme must be lower-case letters, digits, `+`, `.` or `-`");
    }
    let path = match rest.strip_prefix("//") {
        Some(after) => {
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            if authority.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err("its authority must be in lower case");
            }
            path
        }
        None => rest,
    };
    for (i, segment) in path.split('/').enumerate() {
        if segment == "." || segment == ".." {
            return Err("holds a `.` or `..` segment");
        }
        if segment.is_empty() && i > 0 {
            return Err("holds an empty segment (`//` in its path, or a trailing `/`)");
        }
    }
    Ok(())
}

fn tool_call(ep: &McpEndpoint, msg: &Message) -> Result<Call, Malformed> {
    let params = msg.params();
    let tool = match params.get("name") {
        Some(Value::String(n)) if is_tool_name(n) => n.clone(),
        Some(Value::String(_)) => {
            return Err(invalid(
                msg,
                "params.name is not a tool name actgate forwards: 1–128 characters without `/ * ? [ ] { } \\`, spaces or control characters",
            ));
        }
        _ => {
            return Err(invalid(
                msg,
                "params.name (the tool) is required and must be a string",
            ));
        }
    };
    let empty = Value::Object(serde_json::Map::new());
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(invalid(msg, "params.arguments must be an object")),
    };
    let arguments_sha256 = Some(canonical_sha256(args));
    let Some(mapping) = ep.tool(&tool) else {
        return Ok(Call {
            action: "call".into(),
            resource: default_tool_resource(ep, &tool),
            tool: Some(tool),
            rows: None,
            rows_pointer: None,
            recipients: None,
            rows_unenforceable: true,
            recipients_unenforceable: true,
            arguments_sha256,
        });
    };
    let mut values: Vec<String> = Vec::with_capacity(mapping.params.len());
    for name in &mapping.params {
        let value = match args.get(name) {
            Some(Value::String(s)) => s.clone(),
            // An integer every JSON reader reads exactly (a double-based server would read a
            // larger one as a neighbouring id).
            Some(Value::Number(n)) if n.as_i64().is_some_and(|i| i.unsigned_abs() <= MAX_ROWS) => {
                n.to_string()
            }
            Some(_) => {
                return Err(invalid(
                    msg,
                    format!(
                        "argument {name} fills the resource of tool {tool}: it must be a string or an integer of at most 2^53 - 1"
                    ),
                ));
            }
            None => {
                return Err(invalid(
                    msg,
                    format!(
                        "argument {name} is required: it names the resource tool {tool} acts on"
                    ),
                ));
            }
        };
        if !is_placeholder_value(&value) {
            return Err(invalid(
                msg,
                format!(
                    "argument {name} is empty, `.` or `..`, or holds `/`, `%`, a wildcard or a control character: a value that names a resource is data, never a pattern or a path"
                ),
            ));
        }
        values.push(value);
    }
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let resource = mapping.resource.render(&refs);
    let rows = match &mapping.rows {
        None => None,
        Some(ToolRows::Fixed(n)) => Some(*n),
        Some(ToolRows::Argument(p)) => {
            match crate::proxy::extract::lookup(args, p).map_err(|e| invalid(msg, e.message()))? {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= MAX_ROWS) => n.as_u64(),
                Some(_) => {
                    return Err(invalid(
                        msg,
                        format!(
                            "argument {p} (the row count) must be a whole number from 0 to {MAX_ROWS}"
                        ),
                    ));
                }
            }
        }
    };
    let recipients = if mapping.recipients.is_empty() {
        None
    } else {
        Some(
            crate::proxy::extract::recipients(args, &mapping.recipients)
                .map_err(|e| invalid(msg, e.message()))?,
        )
    };
    Ok(Call {
        action: mapping.action.clone(),
        resource,
        tool: Some(tool),
        rows,
        rows_pointer: match &mapping.rows {
            Some(ToolRows::Argument(p)) => Some(p.clone()),
            _ => None,
        },
        recipients,
        rows_unenforceable: mapping.rows.is_none(),
        recipients_unenforceable: mapping.recipients.is_empty(),
        arguments_sha256,
    })
}

/// Sets the row count at `pointer` in a `tools/call`'s arguments (creating the objects on the
/// way): a call that asks for no row count gets exactly the limit, as the proxy does with its
/// row parameter.
pub fn set_rows(msg: &mut Message, pointer: &str, rows: u64) {
    let params = msg.params_mut();
    let mut cur = params
        .entry("arguments")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let segments: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, seg) in segments.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(serde_json::Map::new());
        }
        let obj = cur.as_object_mut().expect("an object");
        if i == segments.len() - 1 {
            obj.insert(seg.clone(), Value::from(rows));
            return;
        }
        cur = obj
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::jsonrpc::read;

    fn endpoint() -> McpEndpoint {
        let config = crate::config::Config::parse(
            r#"
upstreams: { crm-mcp: { url: "http://127.0.0.1:9/mcp" } }
mcp:
  - name: crm
    path: /mcp/crm
    upstream: crm-mcp
    tools:
      get_customer: { action: read, resource: "api://crm/customers/{customer_id}" }
      list_customers: { action: list, resource: "api://crm/customers", rows: { argument: /limit } }
      send_email: { action: send_email, resource: "api://email/outbound", recipients: { arguments: [/to, /cc] } }
"#,
            "t",
        )
        .unwrap();
        config.mcp.endpoints()[0].clone()
    }

    fn call(args: &str, tool: &str) -> Result<Plan, Malformed> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        );
        plan(&endpoint(), &read(body.as_bytes(), 32).unwrap())
    }

    fn decided(p: Plan) -> Call {
        match p {
            Plan::Decide(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tools_map_to_actions_and_resources_with_arguments_as_data() {
        let c = decided(call(r#"{"customer_id": "42"}"#, "get_customer").unwrap());
        assert_eq!(
            (c.action.as_str(), c.resource.as_str()),
            ("read", "api://crm/customers/42")
        );
        let c = decided(call(r#"{"customer_id": 42}"#, "get_customer").unwrap());
        assert_eq!(c.resource, "api://crm/customers/42");
        let c = decided(call(r#"{}"#, "delete_customer").unwrap());
        assert_eq!(
            (c.action.as_str(), c.resource.as_str()),
            ("call", "mcp://crm/tools/delete_customer")
        );
        assert!(c.rows_unenforceable && c.recipients_unenforceable);
        let c = decided(call(r#"{"limit": 500}"#, "list_customers").unwrap());
        assert_eq!(c.rows, Some(500));
        let c = decided(call(r#"{}"#, "list_customers").unwrap());
        assert_eq!((c.rows, c.rows_pointer.as_deref()), (None, Some("/limit")));
        let c = decided(
            call(
                r#"{"to": "a@yourcompany.com", "cc": ["b@x.com"]}"#,
                "send_email",
            )
            .unwrap(),
        );
        assert_eq!(c.recipients.unwrap(), vec!["a@yourcompany.com", "b@x.com"]);
        // The same arguments hash the same, whatever their order.
        let a = decided(call(r#"{"a": 1, "b": [2]}"#, "x").unwrap()).arguments_sha256;
        let b = decided(call(r#"{"b": [2], "a": 1}"#, "x").unwrap()).arguments_sha256;
        assert_eq!(a, b);
    }

    #[test]
    fn wildcards_paths_and_odd_types_in_templated_arguments_are_refused() {
        for args in [
            r#"{"customer_id": "*"}"#,
            r#"{"customer_id": "4?"}"#,
            r#"{"customer_id": "[0-9]"}"#,
            r#"{"customer_id": "{a,b}"}"#,
            r#"{"customer_id": "42/notes"}"#,
            r#"{"customer_id": "../admin"}"#,
            r#"{"customer_id": "a\u0000b"}"#,
            r#"{"customer_id": ""}"#,
            r#"{"customer_id": 4.2}"#,
            r#"{"customer_id": ["42"]}"#,
            r#"{"customer_id": null}"#,
            r#"{"customer_id": 9007199254740993}"#,
            r#"{"customer_id": "4%32"}"#,
            r#"{}"#,
            r#"{"CUSTOMER_ID": "42"}"#,
        ] {
            assert!(call(args, "get_customer").is_err(), "{args}");
        }
        for args in [
            r#"{"limit": -1}"#,
            r#"{"limit": "5"}"#,
            r#"{"limit": 1.5}"#,
            r#"{"Limit": 5}"#,
        ] {
            assert!(call(args, "list_customers").is_err(), "{args}");
        }
        assert!(call(r#"{"to": 5}"#, "send_email").is_err());
        assert!(call(r#"{"To": "e@evil.com"}"#, "send_email").is_err());
        for name in ["a/b", "*", "a b", "x\u{1}", ""] {
            let body = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name": name}});
            let msg = read(body.to_string().as_bytes(), 32).unwrap();
            assert!(plan(&endpoint(), &msg).is_err(), "{name:?}");
        }
    }

    #[test]
    fn other_methods_need_a_token_or_are_not_forwarded() {
        let p = |body: &str| plan(&endpoint(), &read(body.as_bytes(), 32).unwrap()).unwrap();
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            Plan::TokenOnly {
                list: Some(ListKind::Tools)
            }
        );
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#),
            Plan::TokenOnly { list: None }
        );
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Plan::TokenOnly { list: None }
        );
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Plan::TokenOnly { list: None }
        );
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}"#),
            Plan::NotAllowed
        );
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","id":1,"method":"x/y"}"#),
            Plan::NotAllowed
        );
        let c = decided(p(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/hosts"}}"#,
        ));
        assert_eq!(
            (c.action.as_str(), c.resource.as_str()),
            ("read", "mcp://crm/resources/file:///etc/hosts")
        );
        let c = decided(p(
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"greet"}}"#,
        ));
        assert_eq!(
            (c.action.as_str(), c.resource.as_str()),
            ("get", "mcp://crm/prompts/greet")
        );
    }

    #[test]
    fn resource_uris_have_one_reading() {
        for ok in [
            "crm://customers/42",
            "file:///etc/hosts",
            "urn:isbn:0451450523",
            "https://example.com/a/b",
        ] {
            assert_eq!(check_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "file:///public/../etc/shadow",
            "file:///public/./x",
            "FILE:///etc/passwd",
            "file:///%65tc/passwd",
            "file:////etc/passwd",
            "crm://Customers/42",
            "crm://customers/42/",
            "crm://customers/*",
            "crm://customers/4 2",
            "crm://customers/42#x",
            "no-scheme",
            "crm:\\\\x",
        ] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_row_count_is_set_to_the_limit() {
        let mut msg = read(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#,
            32,
        )
        .unwrap();
        set_rows(&mut msg, "/limit", 100);
        assert_eq!(msg.params()["arguments"]["limit"], 100);
        set_rows(&mut msg, "/page/size", 7);
        assert_eq!(msg.params()["arguments"]["page"]["size"], 7);
    }
}
