//! The ACT REST API, black-box: real sockets on 127.0.0.1, a real HTTP client.

mod common;

use std::time::Duration;

use actgate::token::{KeySet, Tokens, now_unix};
use common::{KEY, OTHER_KEY, TestGateway};
use reqwest::StatusCode;
use serde_json::json;

const SEED_POLICY: &str = r#"{"name": "Customer Support Read Policy", "actions": ["read", "list"],
       "resources": ["api://crm/customers/*"], "effect": "allow",
       "constraints": {"maxRows": 100, "allowedDomains": ["yourcompany.com"]}}"#;

#[tokio::test]
async fn the_seed_quickstart_works_verbatim() {
    let gw = TestGateway::start("").await;
    // Step 2, byte for byte.
    let (s, agent) = gw
        .raw_post(
            "/v1/agents",
            KEY,
            "application/json",
            r#"{"name": "OpenAI Customer Support Assistant", "description": "Handles customer inquiries",
       "metadata": {"openai_assistant_id": "asst_abc123"}}"#,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{agent}");
    let agent_id = agent["id"].as_str().unwrap();
    assert!(agent_id.starts_with("agent_"));
    assert_eq!(agent["status"], "active");
    assert_eq!(agent["metadata"]["openai_assistant_id"], "asst_abc123");
    // Step 3, byte for byte.
    let (s, policy) = gw
        .raw_post("/v1/policies", KEY, "application/json", SEED_POLICY)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{policy}");
    let policy_id = policy["id"].as_str().unwrap();
    assert!(policy_id.starts_with("pol_"));
    // Step 4, with the agent id step 2 returned.
    let (s, tok) = gw
        .raw_post(
            "/v1/tokens",
            KEY,
            "application/json",
            format!(r#"{{"agentId": "{agent_id}", "expiresIn": 3600}}"#),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{tok}");
    for field in [
        "token",
        "tokenId",
        "agentId",
        "tenantId",
        "expiresAt",
        "expiresIn",
    ] {
        assert!(!tok[field].is_null(), "missing {field}: {tok}");
    }
    assert_eq!(tok["expiresIn"], 3600);
    assert_eq!(tok["tenantId"], "default-tenant");
    let token = tok["token"].as_str().unwrap();
    // Step 5: validateWithACT(token, 'read', 'api://crm/customers/123').
    let read = gw
        .enforce(token, "read", "api://crm/customers/123", json!({}))
        .await;
    assert_eq!(read["decision"], "allowed", "{read}");
    assert_eq!(read["policyId"], policy_id);
    assert_eq!(read["requestId"], "3f2b8a9e-1c4d-4e5f-8a7b-6c5d4e3f2a1b");
    assert!(read["auditId"].as_str().unwrap().starts_with("aud_"));
    // The constraints the caller must still apply.
    assert_eq!(read["constraints"]["maxRows"], 100);
    assert_eq!(
        read["constraints"]["allowedDomains"],
        json!(["yourcompany.com"])
    );
    let delete = gw
        .enforce(token, "delete", "api://crm/customers/123", json!({}))
        .await;
    assert_eq!(delete["decision"], "denied", "{delete}");
    assert_eq!(delete["reason"], "no_matching_policy");
    // A row count over the limit is a constraint violation, with the values.
    let big = gw
        .enforce(
            token,
            "list",
            "api://crm/customers/all",
            json!({"rows": 500}),
        )
        .await;
    assert_eq!(big["decision"], "denied");
    assert_eq!(big["reason"], "constraint_violated");
    assert!(
        big["message"]
            .as_str()
            .unwrap()
            .contains("maxRows 500 > 100"),
        "{big}"
    );
}

#[tokio::test]
async fn the_other_seed_policy_shapes_decide_as_written() {
    let gw = TestGateway::start("").await;
    gw.policy(json!({"name": "Data Analysis", "actions": ["read", "query"], "resources": ["api://analytics/*"],
        "effect": "allow", "constraints": {"maxRows": 1000, "readOnly": true}}))
        .await;
    gw.policy(
        json!({"name": "Email", "actions": ["send_email"], "resources": ["api://email/*"],
        "effect": "allow", "constraints": {"allowedDomains": ["@yourcompany.com"]}}),
    )
    .await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let d = |v: serde_json::Value| v["decision"].as_str().unwrap().to_string();
    assert_eq!(
        d(gw.enforce(
            &token,
            "query",
            "api://analytics/sales",
            json!({"rows": 1000})
        )
        .await),
        "allowed"
    );
    assert_eq!(
        d(gw.enforce(
            &token,
            "query",
            "api://analytics/sales",
            json!({"rows": 1001})
        )
        .await),
        "denied"
    );
    assert_eq!(
        d(gw.enforce(
            &token,
            "query",
            "api://analytics/sales",
            json!({"method": "POST"})
        )
        .await),
        "denied"
    );
    assert_eq!(
        d(gw.enforce(
            &token,
            "send_email",
            "api://email/outbound",
            json!({"to": ["bob@yourcompany.com"]})
        )
        .await),
        "allowed"
    );
    let evil = gw
        .enforce(
            &token,
            "send_email",
            "api://email/outbound",
            json!({"to": "bob@yourcompany.com", "bcc": ["x@evil.com"]}),
        )
        .await;
    assert_eq!(evil["reason"], "constraint_violated", "{evil}");
    let lookalike = gw
        .enforce(
            &token,
            "send_email",
            "api://email/outbound",
            json!({"to": ["a@yourcompany.com.evil.com"]}),
        )
        .await;
    assert_eq!(lookalike["decision"], "denied");
    let display = gw
        .enforce(
            &token,
            "send_email",
            "api://email/outbound",
            json!({"to": ["Bob <bob@yourcompany.com>"]}),
        )
        .await;
    assert_eq!(display["decision"], "denied");
}

#[tokio::test]
async fn tampered_expired_early_and_foreign_tokens_are_denied_with_their_reason() {
    let gw = TestGateway::start("").await;
    gw.raw_post("/v1/policies", KEY, "application/json", SEED_POLICY)
        .await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let ask = |t: String| {
        let gw = &gw;
        async move {
            gw.enforce(&t, "read", "api://crm/customers/1", json!({}))
                .await["reason"]
                .clone()
        }
    };
    assert_eq!(ask(token.clone()).await, "allowed");
    // Tampered: one payload character changed.
    let mut bytes = token.clone().into_bytes();
    bytes[30] = if bytes[30] == b'a' { b'b' } else { b'a' };
    assert_eq!(
        ask(String::from_utf8(bytes).unwrap()).await,
        "token_invalid"
    );
    // Signed by the gateway's own key but expired / not yet valid.
    let keys = KeySet::load(&gw.data_dir().join("keys")).unwrap();
    let own = Tokens::new(keys, 0, Duration::ZERO, 1);
    let (expired, _) = own
        .issue(
            &agent,
            "default-tenant",
            Duration::from_secs(60),
            None,
            now_unix() - 3600,
        )
        .unwrap();
    assert_eq!(ask(expired).await, "token_expired");
    let (early, _) = own
        .issue(
            &agent,
            "default-tenant",
            Duration::from_secs(60),
            None,
            now_unix() + 3600,
        )
        .unwrap();
    assert_eq!(ask(early).await, "token_invalid");
    // Signed by a key this gateway does not know.
    let foreign = Tokens::new(KeySet::ephemeral(), 0, Duration::ZERO, 1);
    let (forged, _) = foreign
        .issue(
            &agent,
            "default-tenant",
            Duration::from_secs(60),
            None,
            now_unix(),
        )
        .unwrap();
    assert_eq!(ask(forged).await, "token_invalid");
    assert_eq!(ask("not-a-token".into()).await, "token_invalid");
    // No token at all.
    let (_, none) = gw
        .post(
            "/v1/enforce",
            KEY,
            json!({"action": "read", "resourceId": "api://crm/customers/1"}),
        )
        .await;
    assert_eq!(none["reason"], "token_missing");
}

#[tokio::test]
async fn revoking_a_token_or_an_agent_takes_effect_on_the_next_decision() {
    let gw = TestGateway::start("").await;
    gw.raw_post("/v1/policies", KEY, "application/json", SEED_POLICY)
        .await;
    let agent = gw.agent().await;
    let (t1, t1_id) = gw.token(&agent).await;
    let (t2, _) = gw.token(&agent).await;
    for t in [&t1, &t2] {
        // Warm the cache: revocation must still apply to cached tokens.
        assert_eq!(
            gw.enforce(t, "read", "api://crm/customers/1", json!({}))
                .await["decision"],
            "allowed"
        );
    }
    let (s, body) = gw.delete(&format!("/v1/tokens/{t1_id}"), KEY).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "revoked");
    assert_eq!(
        gw.enforce(&t1, "read", "api://crm/customers/1", json!({}))
            .await["reason"],
        "token_revoked"
    );
    assert_eq!(
        gw.enforce(&t2, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );

    let (s, body) = gw.delete(&format!("/v1/agents/{agent}"), KEY).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "revoked");
    assert_eq!(
        gw.enforce(&t2, "read", "api://crm/customers/1", json!({}))
            .await["reason"],
        "agent_revoked"
    );
    // The agent is kept, revoked, and gets no new tokens.
    let (s, body) = gw.get(&format!("/v1/agents/{agent}"), KEY).await;
    assert_eq!(
        (s, body["status"].clone()),
        (StatusCode::OK, json!("revoked"))
    );
    let (s, _) = gw.post("/v1/tokens", KEY, json!({"agentId": agent})).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn policy_changes_apply_to_existing_tokens_at_once() {
    let gw = TestGateway::start("").await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    assert_eq!(
        gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "denied"
    );
    let id = gw
        .policy(json!({"name": "p", "actions": ["read"], "resources": ["api://crm/customers/*"], "effect": "allow"}))
        .await;
    assert_eq!(
        gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );
    let (s, updated) = gw
        .put(&format!("/v1/policies/{id}"), KEY, json!({"name": "p", "actions": ["list"], "resources": ["api://crm/customers/*"], "effect": "allow"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(
        gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "denied"
    );
    assert_eq!(
        gw.enforce(&token, "list", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );
    let (s, _) = gw.delete(&format!("/v1/policies/{id}"), KEY).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        gw.enforce(&token, "list", "api://crm/customers/1", json!({}))
            .await["decision"],
        "denied"
    );
    let (s, _) = gw.get(&format!("/v1/policies/{id}"), KEY).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tenants_are_isolated() {
    let gw = TestGateway::start("").await;
    gw.raw_post("/v1/policies", KEY, "application/json", SEED_POLICY)
        .await;
    let agent = gw.agent().await;
    let (token, token_id) = gw.token(&agent).await;
    let policy = gw.get("/v1/policies", KEY).await.1["policies"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        format!("/v1/agents/{agent}"),
        format!("/v1/policies/{policy}"),
    ] {
        assert_eq!(
            gw.get(&path, OTHER_KEY).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        gw.delete(&format!("/v1/tokens/{token_id}"), OTHER_KEY)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gw.delete(&format!("/v1/agents/{agent}"), OTHER_KEY).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(gw.get("/v1/agents", OTHER_KEY).await.1["agents"], json!([]));
    assert_eq!(gw.get("/v1/audit", OTHER_KEY).await.1["events"], json!([]));
    let (s, _) = gw
        .post("/v1/tokens", OTHER_KEY, json!({"agentId": agent}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The other tenant's key cannot use this tenant's token, even naming this tenant.
    for tenant in ["other", "default-tenant"] {
        let (_, d) = gw
            .post(
                "/v1/enforce",
                OTHER_KEY,
                json!({"capabilityToken": token, "action": "read", "resourceId": "api://crm/customers/1", "tenantId": tenant}),
            )
            .await;
        assert_eq!(d["reason"], "tenant_mismatch", "{d}");
    }
    // And this tenant's key naming another tenant is a mismatch too.
    let (_, d) = gw
        .post(
            "/v1/enforce",
            KEY,
            json!({"capabilityToken": token, "action": "read", "resourceId": "api://crm/customers/1", "tenantId": "other"}),
        )
        .await;
    assert_eq!(d["reason"], "tenant_mismatch");
    // Still fine for its own tenant.
    assert_eq!(
        gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );
}

#[tokio::test]
async fn the_same_ids_in_two_tenants_are_two_agents_and_two_policies() {
    // Ids are unique within a tenant: a caller-chosen id another tenant already uses is no
    // conflict (a 409 would tell one tenant what another has), and nothing is shared.
    let gw = TestGateway::start("").await;
    let policy = |resources: &str| {
        json!({"id": "pol_shared", "name": "shared", "actions": ["read"],
               "resources": [resources], "effect": "allow"})
    };
    for (key, resources) in [(KEY, "api://crm/*"), (OTHER_KEY, "api://other/*")] {
        let (s, b) = gw
            .post(
                "/v1/agents",
                key,
                json!({"id": "agent_shared", "name": "shared"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b) = gw.post("/v1/policies", key, policy(resources)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    // Twice in one tenant is still a conflict.
    let (s, _) = gw
        .post(
            "/v1/agents",
            KEY,
            json!({"id": "agent_shared", "name": "again"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = gw.post("/v1/policies", KEY, policy("api://x/*")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        gw.get("/v1/policies/pol_shared", OTHER_KEY).await.1["resources"],
        json!(["api://other/*"])
    );
    let token = |key: &'static str| {
        let gw = &gw;
        async move {
            let (s, b) = gw
                .post("/v1/tokens", key, json!({"agentId": "agent_shared"}))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            b["token"].as_str().unwrap().to_string()
        }
    };
    let (mine, theirs) = (token(KEY).await, token(OTHER_KEY).await);
    let decide = |key: &'static str, token: String, resource: &'static str| {
        let gw = &gw;
        async move {
            let (_, d) = gw
                .post(
                    "/v1/enforce",
                    key,
                    json!({"capabilityToken": token, "action": "read", "resourceId": resource}),
                )
                .await;
            d["reason"]
                .as_str()
                .unwrap_or(d["decision"].as_str().unwrap())
                .to_string()
        }
    };
    assert_eq!(decide(KEY, mine.clone(), "api://crm/1").await, "allowed");
    assert_eq!(
        decide(KEY, mine.clone(), "api://other/1").await,
        "no_matching_policy"
    );
    assert_eq!(
        decide(OTHER_KEY, theirs.clone(), "api://other/1").await,
        "allowed"
    );
    assert_eq!(
        decide(OTHER_KEY, theirs.clone(), "api://crm/1").await,
        "no_matching_policy"
    );
    // Revoking one tenant's agent leaves the other's alone.
    assert_eq!(
        gw.delete("/v1/agents/agent_shared", OTHER_KEY).await.0,
        StatusCode::OK
    );
    assert_eq!(
        decide(OTHER_KEY, theirs, "api://other/1").await,
        "agent_revoked"
    );
    assert_eq!(decide(KEY, mine, "api://crm/1").await, "allowed");
}

#[tokio::test]
async fn validation_errors_name_the_field_and_the_fix() {
    let gw = TestGateway::start(
        "policies:\n  - { name: Config Policy, actions: [read], resources: [\"api://x/*\"], effect: allow }\n",
    )
    .await;
    let cases: Vec<(&str, serde_json::Value, StatusCode, &str)> = vec![
        ("/v1/agents", json!({}), StatusCode::BAD_REQUEST, "name"),
        (
            "/v1/agents",
            json!({"name": "a", "nmae": 1}),
            StatusCode::BAD_REQUEST,
            "nmae",
        ),
        (
            "/v1/agents",
            json!({"name": "a", "metadata": "x"}),
            StatusCode::BAD_REQUEST,
            "metadata",
        ),
        (
            "/v1/agents",
            json!({"name": "a", "id": "bob"}),
            StatusCode::BAD_REQUEST,
            "id",
        ),
        (
            "/v1/policies",
            json!({"name": "p", "actions": ["read"], "resources": ["api://x/[a"], "effect": "allow"}),
            StatusCode::BAD_REQUEST,
            "resources[0]",
        ),
        (
            "/v1/policies",
            json!({"name": "p", "actions": [], "resources": ["x"], "effect": "allow"}),
            StatusCode::BAD_REQUEST,
            "actions",
        ),
        (
            "/v1/policies",
            json!({"name": "p", "actions": ["read"], "resources": ["x"], "effect": "permit"}),
            StatusCode::BAD_REQUEST,
            "effect",
        ),
        (
            "/v1/policies",
            json!({"name": "p", "actions": ["read"], "resources": ["x"], "effect": "allow", "constraints": {"maxRow": 5}}),
            StatusCode::BAD_REQUEST,
            "constraints.maxRow",
        ),
        (
            "/v1/policies",
            json!({"name": "p", "actions": ["read"], "resources": ["x"], "effect": "allow", "constraints": {"allowedDomains": ["not a domain"]}}),
            StatusCode::BAD_REQUEST,
            "constraints.allowedDomains[0]",
        ),
        (
            "/v1/policies",
            json!({"name": "p", "actions": ["read"], "resources": ["x"], "effect": "deny", "constraints": {"maxRows": 5}}),
            StatusCode::BAD_REQUEST,
            "constraints",
        ),
        (
            "/v1/policies",
            json!({"name": "Config Policy", "actions": ["read"], "resources": ["x"], "effect": "allow"}),
            StatusCode::CONFLICT,
            "",
        ),
        (
            "/v1/tokens",
            json!({"agentId": "agent_nobody"}),
            StatusCode::NOT_FOUND,
            "",
        ),
        ("/v1/tokens", json!({}), StatusCode::BAD_REQUEST, "agentId"),
        (
            "/v1/tokens",
            json!({"agentId": "a", "expiresIn": 100000}),
            StatusCode::BAD_REQUEST,
            "expiresIn",
        ),
        (
            "/v1/tokens",
            json!({"agentId": "a", "expiresIn": 0}),
            StatusCode::BAD_REQUEST,
            "expiresIn",
        ),
        (
            "/v1/tokens",
            json!({"agentId": "a", "expiresIn": -5}),
            StatusCode::BAD_REQUEST,
            "expiresIn",
        ),
        (
            "/v1/tokens",
            json!({"agentId": "a", "policyIds": ["pol_nope"]}),
            StatusCode::BAD_REQUEST,
            "policyIds[0]",
        ),
        (
            "/v1/enforce",
            json!({"capabilityToken": "x"}),
            StatusCode::BAD_REQUEST,
            "action",
        ),
        (
            "/v1/enforce",
            json!({"action": "read", "resourceId": "r", "context": {"rows": "ten"}}),
            StatusCode::BAD_REQUEST,
            "context",
        ),
        (
            "/v1/enforce",
            json!({"action": "read", "resourceId": "r", "extra": 1}),
            StatusCode::BAD_REQUEST,
            "extra",
        ),
    ];
    for (path, body, status, field) in cases {
        let (s, out) = gw.post(path, KEY, body.clone()).await;
        assert_eq!(s, status, "{path} {body}: {out}");
        assert!(
            out["error"].is_string() && out["message"].is_string(),
            "{out}"
        );
        if !field.is_empty() {
            let paths: Vec<&str> = out["problems"]
                .as_array()
                .unwrap_or_else(|| panic!("no problems list: {out}"))
                .iter()
                .map(|p| p["path"].as_str().unwrap())
                .collect();
            assert!(
                paths.contains(&field),
                "{path} {body}: want {field} in {paths:?}"
            );
        }
    }
    // Config policies are read-only through the API.
    let (s, out) = gw.delete("/v1/policies/pol_config-policy", KEY).await;
    assert_eq!(s, StatusCode::CONFLICT, "{out}");
    assert!(out["message"].as_str().unwrap().contains("config file"));
    let (s, listed) = gw.get("/v1/policies", KEY).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(listed["policies"][0]["source"], "config");
}

#[tokio::test]
async fn malformed_requests_are_refused_before_any_handler() {
    let gw = TestGateway::start("").await;
    let (s, out) = gw
        .raw_post("/v1/agents", KEY, "text/plain", r#"{"name": "a"}"#)
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{out}");
    let (s, out) = gw
        .raw_post(
            "/v1/agents",
            KEY,
            "application/json",
            r#"{"name": "a", "name": "b"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        out["message"].as_str().unwrap().contains("duplicate key"),
        "{out}"
    );
    let (s, _) = gw
        .raw_post("/v1/agents", KEY, "application/json", "{not json")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let huge = format!(r#"{{"name": "{}"}}"#, "a".repeat(300 * 1024));
    let (s, _) = gw
        .raw_post("/v1/agents", KEY, "application/json", huge)
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let (s, _) = gw
        .raw_post("/v1/agents", KEY, "application/json", deep)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    for key in ["", "wrong", &format!("{KEY}x")] {
        let (s, out) = gw.get("/v1/agents", key).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{key}: {out}");
        assert_eq!(out["error"], "unauthorized");
    }
    let r = gw
        .client
        .get(format!("{}/v1/agents", gw.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Two keys is not a key.
    let r = gw
        .client
        .get(format!("{}/v1/agents", gw.api))
        .header("X-Api-Key", KEY)
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (s, _) = gw.get("/v1/nothing", KEY).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, out) = gw
        .get("/v1/audit?limit=0&bogus=1&decision=maybe", KEY)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(out["problems"].as_array().unwrap().len(), 3, "{out}");
}

#[tokio::test]
async fn audit_is_filtered_paged_newest_first() {
    let gw = TestGateway::start("").await;
    gw.raw_post("/v1/policies", KEY, "application/json", SEED_POLICY)
        .await;
    let agent = gw.agent().await;
    let (token, token_id) = gw.token(&agent).await;
    for i in 0..5 {
        gw.enforce(
            &token,
            "read",
            &format!("api://crm/customers/{i}"),
            json!({}),
        )
        .await;
        gw.enforce(
            &token,
            "delete",
            &format!("api://crm/customers/{i}"),
            json!({}),
        )
        .await;
    }
    let events = gw.audit_events(10).await;
    assert_eq!(events.len(), 10);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert_eq!(events[0]["tokenId"], token_id.as_str());
    assert_eq!(events[0]["agentId"], agent.as_str());
    let (_, denied) = gw.get("/v1/audit?decision=denied", KEY).await;
    assert_eq!(denied["events"].as_array().unwrap().len(), 5);
    let (_, one) = gw
        .get("/v1/audit?resource=api://crm/customers/3&action=read", KEY)
        .await;
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    // Paging: 4 + 4 + 2, no overlap.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?limit=4&agentId={agent}&cursor={c}"),
            None => format!("/v1/audit?limit=4&agentId={agent}"),
        };
        let (_, page) = gw.get(&path, KEY).await;
        for e in page["events"].as_array().unwrap() {
            seen.push(e["seq"].as_u64().unwrap());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, seqs);
    let (_, future) = gw.get("/v1/audit?since=2999-01-01T00:00:00Z", KEY).await;
    assert_eq!(future["events"], json!([]));
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let gw = TestGateway::start("").await;
    gw.raw_post("/v1/policies", KEY, "application/json", SEED_POLICY)
        .await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let (revoked, revoked_id) = gw.token(&agent).await;
    gw.delete(&format!("/v1/tokens/{revoked_id}"), KEY).await;
    assert_eq!(
        gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );
    let dir = gw.stop().await;

    let gw = TestGateway::start_in(dir, "").await;
    assert_eq!(
        gw.get(&format!("/v1/agents/{agent}"), KEY).await.0,
        StatusCode::OK
    );
    assert_eq!(
        gw.get("/v1/policies", KEY).await.1["policies"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );
    assert_eq!(
        gw.enforce(&revoked, "read", "api://crm/customers/1", json!({}))
            .await["reason"],
        "token_revoked"
    );
    let events = gw.audit_events(3).await;
    assert_eq!(
        events[2]["resource"], "api://crm/customers/1",
        "the pre-restart event is kept"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let gw = TestGateway::start("").await;
    let r = gw
        .client
        .get(format!("{}/healthz", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = gw
        .client
        .get(format!("{}/readyz", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_issue_and_key_rotation_from_the_cli() {
    use common::process::actgate;
    let gw = TestGateway::start("").await;
    gw.raw_post("/v1/policies", KEY, "application/json", SEED_POLICY)
        .await;
    let agent = gw.agent().await;
    let config = gw.dir.path().join("actgate.yaml");
    std::fs::write(&config, common::config_yaml(&gw.data_dir(), "")).unwrap();
    let cfg = config.to_str().unwrap();
    // A script-issued token works like an API-issued one.
    let (code, out, err) = actgate(&[
        "token", "issue", "--config", cfg, "--agent", &agent, "--ttl", "10m",
    ]);
    assert_eq!(code, 0, "{err}");
    let token = out.trim().to_string();
    assert!(token.starts_with("v4.public."));
    assert!(err.contains("tok_") && !err.contains(&token), "{err}");
    assert_eq!(
        gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );
    let (code, _, err) = actgate(&["token", "issue", "--config", cfg, "--agent", "agent_nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("not registered"), "{err}");
    let (code, _, err) = actgate(&[
        "token", "issue", "--config", cfg, "--agent", &agent, "--ttl", "48h",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("tokens.maxTtl"), "{err}");
    // Rotation: a new signing key; after a restart old tokens still verify, new ones use it.
    let (code, out, _) = actgate(&["keys", "rotate", "--config", cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("is active"), "{out}");
    let dir = gw.stop().await;
    let gw = TestGateway::start_in(dir, "").await;
    assert_eq!(
        gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );
    let (new_token, _) = gw.token(&agent).await;
    assert_ne!(
        token.rsplit('.').next(),
        new_token.rsplit('.').next(),
        "signed under the new kid"
    );
    assert_eq!(
        gw.enforce(&new_token, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );
}

#[tokio::test]
async fn agents_as_code_work_like_registered_ones_and_are_read_only() {
    let gw = TestGateway::start(
        r#"
agents:
  - { id: agent_support, name: Support Assistant }
  - { id: agent_retired, name: Retired Assistant, status: revoked }
policies:
  - { name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow }
"#,
    )
    .await;
    let (token, _) = gw.token("agent_support").await;
    assert_eq!(
        gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );
    let (_, list) = gw.get("/v1/agents", KEY).await;
    let support = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "agent_support")
        .unwrap()
        .clone();
    assert_eq!(support["source"], "config");
    assert_eq!(
        gw.get("/v1/agents/agent_support", KEY).await.0,
        StatusCode::OK
    );
    assert_eq!(
        gw.get("/v1/agents/agent_support", OTHER_KEY).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gw.delete("/v1/agents/agent_support", KEY).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        gw.post(
            "/v1/agents",
            KEY,
            json!({"name": "dup", "id": "agent_support"})
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        gw.post("/v1/tokens", KEY, json!({"agentId": "agent_retired"}))
            .await
            .0,
        StatusCode::CONFLICT
    );
}
