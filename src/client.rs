//! A minimal JSON client for the command line's calls to a running gateway's REST API
//! (`actgate check --api`): http or https (rustls, Mozilla roots), one request, a time limit.
//! Not on any request path.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Longest answer read.
const MAX_ANSWER: usize = 4 << 20;

/// POSTs `body` as JSON with `X-Api-Key: key` to `url`; returns the status and the JSON answer
/// (`null` when the answer is not JSON).
pub async fn post_json(
    url: &str,
    key: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("`{url}` is not a URL; write e.g. http://127.0.0.1:8081"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("`{url}`: the scheme must be http or https"));
    }
    let tls = crate::tls::client_config(None, None)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-api-key", key)
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let call = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ))
    };
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .map_err(|_| "no answer within 30s".to_string())?
}
