//! The list filter and the SSE rewriter: never panic; a filtered list only loses entries,
//! and keeps exactly those the viewer could use; an event stream comes out whole (every byte
//! of an event not rewritten passes unchanged).
#![no_main]
use std::sync::{Arc, OnceLock};

use actgate::config::Config;
use actgate::mcp::endpoint::McpEndpoint;
use actgate::mcp::filter::{Viewer, filter_response};
use actgate::mcp::plan::ListKind;
use actgate::policy::reach::Reach;
use actgate::policy::{PolicySet, Principal};
use actgate::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fn fixture() -> &'static (Snapshot, McpEndpoint, Reach) {
    static F: OnceLock<(Snapshot, McpEndpoint, Reach)> = OnceLock::new();
    F.get_or_init(|| {
        let c = Config::parse(
            r#"
upstreams: { m: { url: "http://127.0.0.1:9/mcp" } }
mcp:
  - name: crm
    path: /mcp/crm
    upstream: m
    tools:
      get_customer: { action: read, resource: "api://crm/customers/{customer_id}" }
policies:
  - { name: r, actions: [read], resources: ["api://crm/customers/*"], effect: allow }
  - { name: c, actions: [call], resources: ["mcp://crm/tools/a*"], effect: allow }
  - { name: d, actions: [call], resources: ["mcp://crm/tools/ab*"], effect: deny }
  - { name: res, actions: [read], resources: ["mcp://crm/resources/**"], effect: allow }
"#,
            "fuzz",
        )
        .expect("fuzz config");
        let snapshot = Snapshot {
            policies: Arc::new(PolicySet::build(c.policies.clone()).expect("policies")),
            ..Snapshot::default()
        };
        (snapshot, c.mcp.endpoints()[0].clone(), Reach::default())
    })
}

/// The SSE rewriter over `data` cut in three chunks: with a rewrite that declines every event
/// the stream must come out byte for byte; one that rewrites every event must not panic.
fn sse(data: &[u8]) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use actgate::mcp::sse::Rewrite;
    use actgate::proxy::{BoxError, ProxyBody};
    struct Iter(std::vec::IntoIter<Result<http_body::Frame<Bytes>, BoxError>>);
    impl futures_core::Stream for Iter {
        type Item = Result<http_body::Frame<Bytes>, BoxError>;
        fn poll_next(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    let cut = |n: usize| -> Vec<Result<http_body::Frame<Bytes>, BoxError>> {
        let (a, rest) = data.split_at(n.min(data.len()));
        let (b, c) = rest.split_at((n * 2).min(rest.len()));
        [a, b, c].iter().map(|p| Ok(http_body::Frame::data(Bytes::copy_from_slice(p)))).collect()
    };
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let split = data.first().copied().unwrap_or(0) as usize % 64;
    let body: ProxyBody = StreamBody::new(Iter(cut(split).into_iter())).boxed();
    let out = rt.block_on(Rewrite::new(body, 1 << 16, |_: &str| None).collect());
    if data.len() <= 1 << 16 {
        assert_eq!(out.expect("no error under the bound").to_bytes().as_ref(), data);
    }
    let body: ProxyBody = StreamBody::new(Iter(cut(split).into_iter())).boxed();
    let _ = rt.block_on(Rewrite::new(body, 1 << 16, |d: &str| Some(d.replace('a', "b"))).collect());
}

fuzz_target!(|data: &[u8]| {
    sse(data);
    let (snapshot, ep, reach) = fixture();
    let viewer = Viewer {
        snapshot,
        who: Principal { tenant: "default-tenant", agent: "agent_a", policy_ids: None },
        ep,
        reach,
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let before = value.clone();
    for kind in [ListKind::Tools, ListKind::Resources, ListKind::ResourceTemplates, ListKind::Prompts] {
        let mut v = before.clone();
        filter_response(kind, &mut v, &viewer);
        let key = match kind {
            ListKind::Tools | ListKind::Discover => "tools",
            ListKind::Resources => "resources",
            ListKind::ResourceTemplates => "resourceTemplates",
            ListKind::Prompts => "prompts",
        };
        if let (Some(after), Some(was)) = (
            v.pointer(&format!("/result/{key}")).and_then(|x| x.as_array()),
            before.pointer(&format!("/result/{key}")).and_then(|x| x.as_array()),
        ) {
            assert!(after.len() <= was.len());
            for item in after {
                assert!(was.contains(item), "a kept entry is an entry of the answer");
                if kind == ListKind::Tools {
                    let name = item["name"].as_str().expect("a kept tool has a name");
                    assert!(viewer.tool(name), "{name:?} kept but not callable");
                }
            }
        }
    }
    filter_response(ListKind::Tools, &mut value, &viewer);
});
