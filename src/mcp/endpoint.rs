//! The compiled `mcp:` section: each endpoint's path, upstream, tool mapping and limits.
//!
//! Pure data, built once per config by the config module; the gateway reads it from the
//! snapshot. A tool not listed maps to action `call` and resource `mcp://<name>/tools/<tool>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::route::{Mode, ResourceTemplate};

/// Where a tool's row count comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolRows {
    /// A JSON pointer into the arguments (`rows: {argument: /limit}`); when the call gives
    /// none, actgate sets it to the policy's limit.
    Argument(String),
    /// The tool returns at most this many rows (`rows: {fixed: 1}`, e.g. a single object).
    Fixed(u64),
}

/// How a tool call becomes an (action, resource) and the facts its constraints read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolMapping {
    /// The action decided, e.g. `read`.
    pub action: String,
    /// The resource, its `{placeholders}` filled from top-level arguments (as data).
    pub resource: ResourceTemplate,
    /// The placeholder names, in the order [`ResourceTemplate::render`] takes their values.
    pub params: Vec<String>,
    /// Where the row count for `maxRows` comes from.
    pub rows: Option<ToolRows>,
    /// JSON pointers (into the arguments) of the recipients, for `allowedDomains`.
    pub recipients: Vec<String>,
}

/// One MCP server behind actgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpEndpoint {
    /// Name: the `<name>` of default resources (`mcp://<name>/tools/<tool>`), a metric label.
    pub name: String,
    /// `mcp:<name>`: the route of its requests in the request log, metrics and refusal
    /// records, made once here rather than per request.
    pub log_route: Arc<str>,
    /// The path agents connect to on the proxy listener, e.g. `/mcp/crm`.
    pub path: String,
    /// The upstream's name (an HTTP MCP endpoint or a stdio command).
    pub upstream: String,
    /// Mapped tools, by name.
    pub tools: HashMap<String, ToolMapping>,
    /// Enforce, or only audit would-be denials (`monitor`).
    pub mode: Mode,
    /// Methods beyond the built-in ones that pass with a valid token (e.g.
    /// `subscriptions/listen`, `completion/complete`). Every other method is denied.
    pub allow_methods: Vec<String>,
    /// A server-to-client event stream with nothing on it for this long is closed.
    pub sse_idle_timeout: Duration,
    /// Most legacy sessions open at once; `initialize` beyond it answers 503.
    pub max_sessions: usize,
    /// Most legacy sessions one agent holds at once.
    pub max_sessions_per_agent: usize,
    /// A legacy session unused for this long is forgotten (its next request answers 404, and
    /// the client starts a new one).
    pub session_idle_timeout: Duration,
}

impl McpEndpoint {
    /// The mapping of `tool`, or `None` for the default (`call`, `mcp://<name>/tools/<tool>`).
    pub fn tool(&self, tool: &str) -> Option<&ToolMapping> {
        self.tools.get(tool)
    }

    /// Where the endpoint's OAuth protected-resource metadata (RFC 9728) is served.
    pub fn metadata_path(&self) -> String {
        format!("/.well-known/oauth-protected-resource{}", self.path)
    }
}

/// Every MCP endpoint of a config, by path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct McpTable {
    endpoints: Vec<McpEndpoint>,
}

impl McpTable {
    /// A table of endpoints (their paths are unique: the config checked).
    pub fn new(endpoints: Vec<McpEndpoint>) -> McpTable {
        McpTable { endpoints }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[McpEndpoint] {
        &self.endpoints
    }

    /// The endpoint serving `path` (exactly), if any.
    pub fn find(&self, path: &str) -> Option<&McpEndpoint> {
        self.endpoints.iter().find(|e| e.path == path)
    }

    /// The endpoint whose protected-resource metadata lives at `path`.
    pub fn find_metadata(&self, path: &str) -> Option<&McpEndpoint> {
        let rest = path.strip_prefix("/.well-known/oauth-protected-resource")?;
        self.endpoints.iter().find(|e| e.path == rest)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}
