//! The MCP gateway: every tool call an agent makes over MCP (Streamable HTTP) decided like a
//! proxied request.
pub mod endpoint;
pub mod jsonrpc;
pub mod plan;
