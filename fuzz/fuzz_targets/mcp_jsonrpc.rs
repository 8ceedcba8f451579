//! The MCP message reader and the per-method plan: never panic; an accepted message is one
//! JSON-RPC object of a known shape; a decided tool call names a tool actgate forwards and a
//! resource with no wildcard from its arguments (they are data, never patterns).
#![no_main]
use std::sync::OnceLock;

use actgate::config::Config;
use actgate::mcp::endpoint::McpEndpoint;
use actgate::mcp::jsonrpc::{Kind, read};
use actgate::mcp::plan::{Plan, plan};
use libfuzzer_sys::fuzz_target;

fn endpoint() -> &'static McpEndpoint {
    static EP: OnceLock<McpEndpoint> = OnceLock::new();
    EP.get_or_init(|| {
        let c = Config::parse(
            r#"
upstreams: { m: { url: "http://127.0.0.1:9/mcp" } }
mcp:
  - name: crm
    path: /mcp/crm
    upstream: m
    tools:
      get_customer: { action: read, resource: "api://crm/customers/{customer_id}/{part}" }
      list_customers: { action: list, resource: "api://crm/customers", rows: { argument: /page/limit } }
      send_email: { action: send_email, resource: "api://email/outbound", recipients: { arguments: [/to, /cc] } }
"#,
            "fuzz",
        )
        .expect("fuzz config");
        c.mcp.endpoints()[0].clone()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = read(data, 32) else { return };
    assert!(msg.value.is_object());
    match &msg.kind {
        Kind::Request { id, .. } | Kind::Response { id } => {
            assert!(id.is_string() || id.is_i64() || id.is_u64(), "{id}");
        }
        Kind::Notification { .. } => assert!(msg.value.get("id").is_none()),
    }
    if let Ok(Plan::Decide(call)) = plan(endpoint(), &msg) {
        if let Some(tool) = &call.tool {
            assert!(actgate::config::is_tool_name(tool), "{tool:?}");
            if tool == "get_customer" {
                let rest = call.resource.strip_prefix("api://crm/customers/").expect("template");
                assert!(!rest.contains(['*', '?', '[', ']', '{', '}', '\\']), "{rest:?}");
                assert_eq!(rest.matches('/').count(), 1, "{rest:?}");
            }
        }
    }
});
