//! Every way the proxy refuses a request, its status, its reason code, and the JSON body an
//! agent gets: `{"error", "reason", "message", "requestId", "policyId"?}`. Never the token.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use crate::policy::Reason;

/// A refusal.
#[derive(Debug, Clone)]
pub enum ProxyError {
    /// Malformed or ambiguous request.
    BadRequest(String),
    /// No route for this method and path.
    NoRoute,
    /// The token stage denied (missing, invalid, expired, revoked, agent revoked, tenant).
    Unauthorized {
        /// Reason code.
        reason: Reason,
        /// Explanation.
        message: String,
    },
    /// The policy stage denied.
    Forbidden {
        /// Reason code.
        reason: Reason,
        /// Explanation.
        message: String,
        /// Deciding policy.
        policy_id: Option<String>,
    },
    /// Body over `limits.maxBodyBytes`.
    TooLarge(usize),
    /// The route inspects the body and it is not JSON.
    UnsupportedMediaType,
    /// The body that must be inspected did not arrive within `limits.bodyReadTimeout`.
    RequestTimeout,
    /// The upstream failed (connection refused, reset, bad response).
    BadGateway(String),
    /// The upstream did not answer within its timeout.
    GatewayTimeout,
    /// The decision could not be recorded (audit unavailable or full): fail closed.
    Unavailable(String),
    /// The shared store has been unreachable past `store.maxStaleness`: fail closed.
    StoreUnavailable(String),
}

impl ProxyError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> ProxyError {
        ProxyError::BadRequest(message.into())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ProxyError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Unavailable(_) | ProxyError::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The reason code (a metric label and the body's `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "invalid_request",
            ProxyError::NoRoute => "no_route",
            ProxyError::Unauthorized { reason, .. } | ProxyError::Forbidden { reason, .. } => {
                reason.as_str()
            }
            ProxyError::TooLarge(_) => "body_too_large",
            ProxyError::UnsupportedMediaType => "unsupported_media_type",
            ProxyError::RequestTimeout => "request_timeout",
            ProxyError::BadGateway(_) => "upstream_error",
            ProxyError::GatewayTimeout => "upstream_timeout",
            ProxyError::Unavailable(_) => "audit_unavailable",
            ProxyError::StoreUnavailable(_) => "store_unavailable",
        }
    }

    fn error_code(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::NoRoute => "not_found",
            ProxyError::Unauthorized { .. } => "unauthorized",
            ProxyError::Forbidden { .. } => "forbidden",
            ProxyError::TooLarge(_) => "payload_too_large",
            ProxyError::UnsupportedMediaType => "unsupported_media_type",
            ProxyError::RequestTimeout => "request_timeout",
            ProxyError::BadGateway(_) => "bad_gateway",
            ProxyError::GatewayTimeout => "gateway_timeout",
            ProxyError::Unavailable(_) | ProxyError::StoreUnavailable(_) => "service_unavailable",
        }
    }

    /// A sentence an agent can act on.
    pub fn message(&self) -> String {
        match self {
            ProxyError::BadRequest(m) => format!("malformed request: {m}"),
            ProxyError::NoRoute => {
                "no route for this method and path; actgate forwards only configured routes".into()
            }
            ProxyError::Unauthorized { message, .. } | ProxyError::Forbidden { message, .. } => {
                message.clone()
            }
            ProxyError::TooLarge(n) => format!("request body larger than {n} bytes"),
            ProxyError::UnsupportedMediaType => {
                "this route reads the JSON body: send Content-Type: application/json".into()
            }
            ProxyError::RequestTimeout => "the request body did not arrive in time".into(),
            ProxyError::BadGateway(_) => "the upstream service failed; try again later".into(),
            ProxyError::GatewayTimeout => "the upstream service did not answer in time".into(),
            ProxyError::Unavailable(_) => {
                "actgate cannot record this decision right now; denied (fail closed), retry later"
                    .into()
            }
            ProxyError::StoreUnavailable(m) => m.clone(),
        }
    }

    /// The response.
    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        let mut body = serde_json::json!({
            "error": self.error_code(),
            "reason": self.reason(),
            "message": self.message(),
            "requestId": request_id,
        });
        if let ProxyError::Forbidden {
            policy_id: Some(p), ..
        } = &self
        {
            body["policyId"] = p.clone().into();
        }
        let mut resp = Response::new(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(super::forward::REQUEST_ID, v);
        }
        if matches!(self, ProxyError::Unauthorized { .. }) {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        resp
    }
}
