//! Reading one JSON-RPC message as MCP sends it, strictly: one reading for actgate and for
//! the server behind it.
//!
//! Pure: no I/O. The body is strict JSON ([`crate::json::parse_strict`]: no duplicate keys,
//! not even ones differing only in letter case, bounded depth); it must be a single object
//! (a batch is refused), `"jsonrpc": "2.0"`, and one of a request (`id` + `method`), a
//! notification (`method`, no `id`) or a response (`id` + exactly one of `result`, `error`).
//! An `id` is a string of at most 256 bytes or an integer that fits 64 bits — never a float, a
//! number too big to round-trip, `null`, or an object. A method is 1–128 bytes of letters,
//! digits, `/ _ - .`; one that equals a known MCP method but for letter case is refused, so no
//! case-insensitive router downstream can dispatch what actgate read as something else.
//! Params are an object. A key of `params` that equals a known parameter but for letter case
//! (`Name`, `URI`, `Arguments`) is refused for the same reason.

use serde_json::{Map, Value};

/// MCP methods actgate knows by name (decided, token-only, or lists it filters).
pub const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
];

/// Parameter names of the methods actgate reads.
const KNOWN_PARAMS: &[&str] = &[
    "name",
    "arguments",
    "uri",
    "cursor",
    "_meta",
    "inputResponses",
    "requestState",
    "protocolVersion",
    "capabilities",
    "clientInfo",
];

/// JSON-RPC error codes actgate answers with.
pub mod code {
    /// Not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a single well-formed JSON-RPC message.
    pub const INVALID_REQUEST: i64 = -32600;
    /// A method actgate does not forward.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Params actgate cannot read as one thing.
    pub const INVALID_PARAMS: i64 = -32602;
    /// A policy (or the token) denied it: an implementation-defined server error.
    pub const DENIED: i64 = -32003;
    /// Routing headers disagree with the body (MCP's HEADER_MISMATCH).
    pub const HEADER_MISMATCH: i64 = -32020;
}

/// What kind of message it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A request: it gets an answer.
    Request {
        /// Its id (a string or an integer).
        id: Value,
        /// The method.
        method: String,
    },
    /// A notification: no answer.
    Notification {
        /// The method.
        method: String,
    },
    /// A response to a server-to-client request (sampling, elicitation, roots).
    Response {
        /// The id of the server's request it answers.
        id: Value,
    },
}

/// One message, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Request, notification or response.
    pub kind: Kind,
    /// The whole message as parsed (forwarded as is unless actgate must change it).
    pub value: Value,
}

/// Why a body is not one JSON-RPC message actgate will forward.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// The JSON-RPC error code.
    pub code: i64,
    /// What is wrong, for the client.
    pub message: String,
    /// The message's id, when it could be read.
    pub id: Value,
}

fn bad(code: i64, message: impl Into<String>, id: &Value) -> Malformed {
    Malformed {
        code,
        message: message.into(),
        id: id.clone(),
    }
}

impl Message {
    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            Kind::Request { method, .. } | Kind::Notification { method } => Some(method),
            Kind::Response { .. } => None,
        }
    }

    /// The id of a request or response; `null` for a notification.
    pub fn id(&self) -> Value {
        match &self.kind {
            Kind::Request { id, .. } | Kind::Response { id } => id.clone(),
            Kind::Notification { .. } => Value::Null,
        }
    }

    /// `params` (an empty map when absent).
    pub fn params(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.value
            .get("params")
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    /// `params` to change (created when absent).
    pub fn params_mut(&mut self) -> &mut Map<String, Value> {
        let obj = self.value.as_object_mut().expect("a message is an object");
        let params = obj
            .entry("params")
            .or_insert_with(|| Value::Object(Map::new()));
        if !params.is_object() {
            *params = Value::Object(Map::new());
        }
        params.as_object_mut().expect("params is an object")
    }
}

/// Reads `body` as one JSON-RPC message (see the module documentation for the rules).
pub fn read(body: &[u8], max_depth: usize) -> Result<Message, Malformed> {
    let value = crate::json::parse_strict(body, max_depth).map_err(|e| {
        bad(
            code::PARSE_ERROR,
            format!("the body is not strict JSON: {e}"),
            &Value::Null,
        )
    })?;
    let obj = match &value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(bad(
                code::INVALID_REQUEST,
                "JSON-RPC batches are not accepted: send one message per request",
                &Value::Null,
            ));
        }
        _ => {
            return Err(bad(
                code::INVALID_REQUEST,
                "the body must be one JSON-RPC message (an object)",
                &Value::Null,
            ));
        }
    };
    let id = match obj.get("id") {
        None => None,
        Some(v) => Some(read_id(v)?),
    };
    let null = Value::Null;
    let echo = id.as_ref().unwrap_or(&null);
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "jsonrpc" | "id" | "method" | "params" | "result" | "error"
        ) {
            return Err(bad(
                code::INVALID_REQUEST,
                format!(
                    "unknown member {key:?}; a JSON-RPC message has jsonrpc, id, method, params, result or error"
                ),
                echo,
            ));
        }
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(bad(
            code::INVALID_REQUEST,
            "\"jsonrpc\" must be \"2.0\"",
            echo,
        ));
    }
    let kind = match (obj.get("method"), &id) {
        (Some(m), _) => {
            let method = read_method(m, echo)?;
            if obj.contains_key("result") || obj.contains_key("error") {
                return Err(bad(
                    code::INVALID_REQUEST,
                    "a message with a method has no result or error",
                    echo,
                ));
            }
            match obj.get("params") {
                None => {}
                Some(Value::Object(params)) => check_params(params, echo)?,
                Some(_) => {
                    return Err(bad(code::INVALID_PARAMS, "params must be an object", echo));
                }
            }
            match id {
                Some(id) => Kind::Request { id, method },
                None => Kind::Notification { method },
            }
        }
        (None, Some(id)) => {
            let answers =
                usize::from(obj.contains_key("result")) + usize::from(obj.contains_key("error"));
            if answers != 1 || obj.contains_key("params") {
                return Err(bad(
                    code::INVALID_REQUEST,
                    "a response has exactly one of result and error, and no params",
                    echo,
                ));
            }
            Kind::Response { id: id.clone() }
        }
        (None, None) => {
            return Err(bad(
                code::INVALID_REQUEST,
                "a message needs a method (a request or notification) or an id (a response)",
                echo,
            ));
        }
    };
    Ok(Message { kind, value })
}

fn read_id(v: &Value) -> Result<Value, Malformed> {
    let ok = match v {
        Value::String(s) => s.len() <= 256 && !s.chars().any(char::is_control),
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if ok {
        Ok(v.clone())
    } else {
        Err(bad(
            code::INVALID_REQUEST,
            "\"id\" must be a string (at most 256 bytes) or an integer that fits 64 bits",
            &Value::Null,
        ))
    }
}

fn read_method(m: &Value, id: &Value) -> Result<String, Malformed> {
    let Some(method) = m.as_str() else {
        return Err(bad(
            code::INVALID_REQUEST,
            "\"method\" must be a string",
            id,
        ));
    };
    if method.is_empty()
        || method.len() > 128
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
    {
        return Err(bad(
            code::INVALID_REQUEST,
            "\"method\" is 1–128 characters of letters, digits, `/ _ - .`",
            id,
        ));
    }
    if let Some(known) = KNOWN_METHODS
        .iter()
        .chain(["notifications/initialized", "notifications/cancelled"].iter())
        .find(|k| k.eq_ignore_ascii_case(method) && **k != method)
    {
        return Err(bad(
            code::INVALID_REQUEST,
            format!(
                "method {method:?} differs from {known:?} only in letter case; methods are case-sensitive"
            ),
            id,
        ));
    }
    Ok(method.to_string())
}

fn check_params(params: &Map<String, Value>, id: &Value) -> Result<(), Malformed> {
    for key in params.keys() {
        if let Some(known) = KNOWN_PARAMS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(key) && **k != key)
        {
            return Err(bad(
                code::INVALID_PARAMS,
                format!(
                    "params.{key} differs from {known:?} only in letter case; parameter names are case-sensitive"
                ),
                id,
            ));
        }
    }
    Ok(())
}

/// A JSON-RPC error response.
pub fn error_response(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(d) = data {
        error["data"] = d;
    }
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error})
}

/// A JSON-RPC result response.
pub fn result_response(id: &Value, result: Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(body: &str) -> i64 {
        read(body.as_bytes(), 32).unwrap_err().code
    }

    #[test]
    fn requests_notifications_and_responses_are_told_apart() {
        let m = read(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":{}}}"#, 32).unwrap();
        assert_eq!(m.method(), Some("tools/call"));
        assert_eq!(m.id(), Value::from(3));
        assert_eq!(m.params()["name"], "x");
        let m = read(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            32,
        )
        .unwrap();
        assert!(matches!(m.kind, Kind::Notification { .. }));
        let m = read(
            br#"{"jsonrpc":"2.0","id":"s-1","result":{"action":"accept"}}"#,
            32,
        )
        .unwrap();
        assert!(matches!(m.kind, Kind::Response { .. }));
        let m = read(br#"{"jsonrpc":"2.0","id":"x","method":"tools/list"}"#, 32).unwrap();
        assert!(m.params().is_empty());
    }

    #[test]
    fn everything_two_readers_could_read_differently_is_refused() {
        for (body, want) in [
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#,
                code::PARSE_ERROR,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call"}"#,
                code::PARSE_ERROR,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"TOOLS/CALL","params":{}}"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"Tools/call","params":{}}"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}"#,
                code::PARSE_ERROR,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"b"}}"#,
                code::INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","ARGUMENTS":{}}}"#,
                code::INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
                code::INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                code::INVALID_REQUEST,
            ),
            (r#"{"id":1,"method":"ping"}"#, code::INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","extra":1}"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools call"}"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/cäll"}"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
                code::INVALID_REQUEST,
            ),
            (r#"{"jsonrpc":"2.0"}"#, code::INVALID_REQUEST),
            (r#"not json"#, code::PARSE_ERROR),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"} {}"#,
                code::PARSE_ERROR,
            ),
        ] {
            assert_eq!(code_of(body), want, "{body}");
        }
        let long_id = format!(
            r#"{{"jsonrpc":"2.0","id":"{}","method":"ping"}}"#,
            "x".repeat(300)
        );
        assert_eq!(code_of(&long_id), code::INVALID_REQUEST);
    }
}
