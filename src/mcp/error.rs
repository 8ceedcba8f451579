//! Every way the MCP gateway refuses a message before (or instead of) a decision, as the
//! JSON-RPC error an MCP client understands: `{"jsonrpc":"2.0","id":…,"error":{"code",
//! "message","data":{"reason","requestId"}}}`, with the HTTP status MCP servers use for it.
//! Token problems are 401 with `WWW-Authenticate: Bearer` naming the endpoint's OAuth
//! protected-resource metadata (RFC 9728). Never the token.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::jsonrpc::{Malformed, code, error_response};
use crate::proxy::ProxyBody;
use crate::proxy::error::ProxyError;

/// A refusal of the MCP gateway.
#[derive(Debug, Clone)]
pub struct McpError {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON-RPC error code.
    pub code: i64,
    /// Reason code (audit, metrics, `error.data.reason`).
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
    /// The id of the message refused (`null` when unknown).
    pub id: Value,
    /// `WWW-Authenticate` value, for 401.
    pub challenge: Option<String>,
    /// Answer with `Allow` (405).
    pub allow: bool,
}

impl McpError {
    fn new(
        status: StatusCode,
        code: i64,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        McpError {
            status,
            code,
            reason,
            message: message.into(),
            id: Value::Null,
            challenge: None,
            allow: false,
        }
    }

    /// The same refusal, naming the message's id.
    pub fn with_id(mut self, id: Value) -> Self {
        self.id = id;
        self
    }

    /// A body that is not one JSON-RPC message actgate can read as one thing.
    pub fn malformed(m: Malformed) -> Self {
        McpError::new(
            StatusCode::BAD_REQUEST,
            m.code,
            "invalid_request",
            m.message,
        )
        .with_id(m.id)
    }

    /// Routing headers that disagree with the body.
    pub fn header_mismatch(message: impl Into<String>, id: Value) -> Self {
        McpError::new(
            StatusCode::BAD_REQUEST,
            code::HEADER_MISMATCH,
            "invalid_request",
            message,
        )
        .with_id(id)
    }

    /// A token problem: 401 with the challenge pointing at the endpoint's metadata.
    pub fn unauthorized(reason: &'static str, message: String, metadata_url: &str) -> Self {
        let mut e = McpError::new(StatusCode::UNAUTHORIZED, code::DENIED, reason, message);
        e.challenge = Some(format!(
            "Bearer error=\"invalid_token\", resource_metadata=\"{metadata_url}\""
        ));
        e
    }

    /// A method actgate does not forward.
    pub fn method_not_allowed(method: &str, id: Value) -> Self {
        McpError::new(
            StatusCode::OK,
            code::METHOD_NOT_FOUND,
            "method_not_allowed",
            format!(
                "method {method} is not forwarded by actgate: tools/call, resources/read and prompts/get are decided by policy, the handshake, discovery, lists, ping and notifications need a valid token, and anything else must be listed in the endpoint's allowMethods"
            ),
        )
        .with_id(id)
    }

    /// A session id actgate never saw opened, or forgot.
    pub fn session_unknown() -> Self {
        McpError::new(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "session_unknown",
            "Session not found: it was never opened through actgate, has ended, or was idle too long; start a new one with initialize",
        )
    }

    /// A session opened by another agent.
    pub fn session_foreign() -> Self {
        McpError::new(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "session_mismatch",
            "this session was opened with another agent's token; a session serves only the agent that opened it",
        )
    }

    /// The endpoint's or the agent's sessions are at their maximum.
    pub fn too_many_sessions(full: super::session::Full) -> Self {
        let message = match full {
            super::session::Full::Endpoint(max) => format!(
                "this MCP endpoint holds its maximum of {max} sessions (maxSessions); try again later"
            ),
            super::session::Full::Agent(max) => format!(
                "this agent holds its maximum of {max} sessions on this endpoint (maxSessionsPerAgent); end one (DELETE) or reuse it"
            ),
        };
        McpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::INVALID_REQUEST,
            "too_many_sessions",
            message,
        )
    }

    /// A compressed (or otherwise encoded) message.
    pub fn unsupported_encoding() -> Self {
        McpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "unsupported_media_type",
            "send the message uncompressed (no Content-Encoding): actgate decides on the bytes as they come",
        )
    }

    /// Any other HTTP method than GET, POST, DELETE.
    pub fn http_method_not_allowed() -> Self {
        let mut e = McpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            code::INVALID_REQUEST,
            "invalid_request",
            "an MCP endpoint takes POST (messages), GET (the event stream) and DELETE (end a session)",
        );
        e.allow = true;
        e
    }

    /// A refusal the proxy's shared stages made (token headers, body size, timeouts, upstream
    /// failures), in JSON-RPC form.
    pub fn from_proxy(e: ProxyError) -> Self {
        let status = e.status();
        let reason = e.reason();
        let code = match status {
            StatusCode::BAD_REQUEST => code::INVALID_REQUEST,
            _ => code::DENIED,
        };
        McpError::new(status, code, reason, e.message())
    }

    /// The response.
    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        let body = error_response(
            &self.id,
            self.code,
            &self.message,
            Some(json!({"reason": self.reason, "requestId": request_id})),
        );
        let mut resp = Response::new(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(crate::proxy::forward::REQUEST_ID, v);
        }
        if let Some(c) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            h.insert(WWW_AUTHENTICATE, c);
        }
        if self.allow {
            h.insert(ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
        }
        resp
    }
}
