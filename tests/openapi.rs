//! The OpenAPI document served at `GET /v1/openapi.json` against the real API: every route the
//! router serves is documented and every documented operation is served, and the answers of
//! the main operations carry the properties the document requires.

mod common;

use std::collections::BTreeSet;

use common::{KEY, TestGateway};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `(METHOD, /path/{id})` of every `.route(...)` in the API router's source.
fn routes_in_the_router() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/api/mod.rs");
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + 7..];
        let path_start = rest.find('"').unwrap() + 1;
        let path_end = path_start + rest[path_start..].find('"').unwrap();
        let path = &rest[path_start..path_end];
        // The route's call runs to the next `.route(` or the router's `.fallback(`.
        let end = [".route(", ".fallback("]
            .iter()
            .filter_map(|m| rest.find(m))
            .min()
            .unwrap_or(rest.len());
        let call = &rest[path_end..end];
        for (m, verb) in [
            ("get(", "GET"),
            ("post(", "POST"),
            ("put(", "PUT"),
            ("delete(", "DELETE"),
        ] {
            if call.contains(m) {
                out.insert((verb.to_string(), path.to_string()));
            }
        }
    }
    out
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

/// The names of `schema`'s required properties missing from `value` (following `$ref`s).
fn missing(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let schema = match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => schema,
    };
    let mut out = Vec::new();
    for r in schema["required"].as_array().into_iter().flatten() {
        let name = r.as_str().unwrap();
        if value.get(name).is_none() {
            out.push(name.to_string());
        }
    }
    out
}

#[tokio::test]
async fn the_document_matches_the_api() {
    let gw = TestGateway::start("").await;
    // Served without a key.
    let doc: Value = gw
        .client
        .get(format!("{}/v1/openapi.json", gw.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut router = routes_in_the_router();
    router.insert(("GET".into(), "/v1/openapi.json".into()));
    assert_eq!(
        documented(&doc),
        router,
        "the document and the router disagree"
    );

    // Every documented operation is served (never 404 for the path, never 405).
    for (method, path) in documented(&doc) {
        let url = format!("{}{}", gw.api, path.replace("{id}", "nothing_here"));
        let r = gw
            .client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url)
            .header("X-Api-Key", KEY)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_ne!(
            r.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        if !path.contains("{id}") {
            assert_ne!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        }
        if r.status().is_client_error() {
            let body: Value = r.json().await.unwrap();
            let schema = json!({"$ref": "#/components/schemas/Error"});
            assert!(
                missing(&doc, &schema, &body).is_empty(),
                "{method} {path}: {body}"
            );
        }
    }

    // The main answers carry what the document requires.
    let ok = |path: &str, method: &str, code: &str| {
        doc["paths"][path][method]["responses"][code]["content"]["application/json"]["schema"]
            .clone()
    };
    let (s, agent) = gw.post("/v1/agents", KEY, json!({"name": "a"})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        missing(&doc, &ok("/v1/agents", "post", "201"), &agent),
        Vec::<String>::new()
    );
    let id = agent["id"].as_str().unwrap();
    let policy = json!({"name": "p", "actions": ["read"], "resources": ["api://x/*"], "effect": "allow", "constraints": {"maxRows": 5}});
    let (_, p) = gw.post("/v1/policies", KEY, policy).await;
    assert_eq!(
        missing(&doc, &ok("/v1/policies", "post", "201"), &p),
        Vec::<String>::new()
    );
    let (_, t) = gw.post("/v1/tokens", KEY, json!({"agentId": id})).await;
    assert_eq!(
        missing(&doc, &ok("/v1/tokens", "post", "201"), &t),
        Vec::<String>::new()
    );
    let (_, d) = gw
        .post(
            "/v1/enforce",
            KEY,
            json!({"capabilityToken": t["token"], "action": "read", "resourceId": "api://x/1"}),
        )
        .await;
    assert_eq!(
        missing(&doc, &ok("/v1/enforce", "post", "200"), &d),
        Vec::<String>::new()
    );
    let events = gw.audit_events(1).await;
    let (_, page) = gw.get("/v1/audit", KEY).await;
    assert_eq!(
        missing(&doc, &ok("/v1/audit", "get", "200"), &page),
        Vec::<String>::new()
    );
    let event_schema = json!({"$ref": "#/components/schemas/AuditEvent"});
    assert_eq!(
        missing(&doc, &event_schema, &events[0]),
        Vec::<String>::new()
    );
    for (path, key) in [
        ("/v1/agents", "agents"),
        ("/v1/policies", "policies"),
        ("/v1/apikeys", "apiKeys"),
    ] {
        let (s, list) = gw.get(path, KEY).await;
        assert_eq!(s, StatusCode::OK);
        let item = &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["properties"][key]["items"];
        for v in list[key].as_array().unwrap() {
            assert_eq!(missing(&doc, item, v), Vec::<String>::new(), "{path}: {v}");
        }
    }
    let (_, revoked) = gw
        .delete(
            &format!("/v1/tokens/{}", t["tokenId"].as_str().unwrap()),
            KEY,
        )
        .await;
    assert_eq!(
        missing(&doc, &ok("/v1/tokens/{id}", "delete", "200"), &revoked),
        Vec::<String>::new()
    );
}
