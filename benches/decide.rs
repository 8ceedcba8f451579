//! Decision-core benchmark: one decision at 10, 1,000 and 100,000 policies, the compile time
//! of each set, and — with `--features cedar` — the same decisions made by cedar-policy on
//! equivalent policies generated from the same source.
//!
//! ```text
//! cargo bench --bench decide                      # actgate only
//! cargo bench --features cedar --bench decide     # side by side with Cedar, prints ratios
//! ```
//!
//! The workload is a realistic mix: many tenants (about 50 policies each), several agents per
//! tenant, agent-scoped and tenant-wide policies, literal resources, one-segment and
//! multi-segment globs, alternations, deny policies, maxRows / allowedDomains / readOnly
//! constraints, and requests that hit, miss, and break constraints.

use std::hint::black_box;
use std::time::{Duration, Instant};

use actgate::error::Problems;
use actgate::policy::{
    Facts, Policy, PolicyInput, PolicySet, PolicySource, Principal, Query, validate_policy,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Deterministic generator (xorshift64*), so every run and both engines see the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.below(list.len() as u64) as usize]
    }
}

const SERVICES: &[&str] = &["crm", "analytics", "tickets", "billing", "hr"];
const KINDS: &[&str] = &["customers", "accounts", "orders", "reports", "notes"];
const AGENTS_PER_TENANT: u64 = 8;
const POLICIES_PER_TENANT: usize = 50;

/// One generated policy, engine-neutral.
#[derive(Clone, Debug)]
struct Spec {
    tenant: String,
    agents: Option<Vec<String>>,
    actions: Vec<&'static str>,
    /// (pattern, kind) where kind says how to express it in Cedar.
    resources: Vec<(String, Shape)>,
    deny: bool,
    max_rows: Option<u64>,
    domains: Option<Vec<&'static str>>,
    read_only: bool,
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Literal resource.
    Literal,
    /// `prefix/*`: one more segment.
    OneSegment,
    /// `prefix/**`: anything below.
    Below,
}

fn tenant_of(i: usize) -> String {
    format!("tenant-{}", i / POLICIES_PER_TENANT)
}

fn generate(n: usize, rng: &mut Rng) -> Vec<Spec> {
    (0..n)
        .map(|i| {
            let tenant = tenant_of(i);
            let svc = rng.pick(SERVICES);
            let kind = rng.pick(KINDS);
            let agent = format!("agent_{}", rng.below(AGENTS_PER_TENANT));
            match rng.below(10) {
                0..=3 => Spec {
                    tenant,
                    agents: None,
                    actions: vec!["read", "list"],
                    resources: vec![(format!("api://{svc}/{kind}/*"), Shape::OneSegment)],
                    deny: false,
                    max_rows: Some(50 + 50 * rng.below(20)),
                    domains: None,
                    read_only: false,
                },
                4..=5 => Spec {
                    tenant,
                    agents: Some(vec![agent]),
                    actions: vec!["read", "list", "update", "query"],
                    resources: vec![(format!("api://{svc}/**"), Shape::Below)],
                    deny: false,
                    max_rows: None,
                    domains: None,
                    read_only: rng.below(2) == 0,
                },
                6..=7 => Spec {
                    tenant,
                    agents: None,
                    actions: vec!["delete"],
                    resources: vec![(
                        format!("api://{svc}/{kind}/{}", rng.below(100)),
                        Shape::Literal,
                    )],
                    deny: true,
                    max_rows: None,
                    domains: None,
                    read_only: false,
                },
                8 => Spec {
                    tenant,
                    agents: Some(vec![agent]),
                    actions: vec!["send_email"],
                    resources: vec![("api://email/outbound".into(), Shape::Literal)],
                    deny: false,
                    max_rows: None,
                    domains: Some(vec!["yourcompany.com"]),
                    read_only: false,
                },
                _ => Spec {
                    tenant,
                    agents: None,
                    actions: vec!["read"],
                    resources: vec![
                        (format!("api://{svc}/{kind}/*"), Shape::OneSegment),
                        (format!("api://{svc}/archive/{kind}"), Shape::Literal),
                    ],
                    deny: false,
                    max_rows: Some(10),
                    domains: None,
                    read_only: true,
                },
            }
        })
        .collect()
}

fn to_policy(i: usize, s: &Spec) -> Policy {
    let mut json = serde_json::json!({
        "name": format!("p{i}"),
        "actions": s.actions,
        "resources": s.resources.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        "effect": if s.deny { "deny" } else { "allow" },
    });
    if let Some(a) = &s.agents {
        json["agents"] = serde_json::json!(a);
    }
    let mut c = serde_json::Map::new();
    if let Some(n) = s.max_rows {
        c.insert("maxRows".into(), n.into());
    }
    if let Some(d) = &s.domains {
        c.insert("allowedDomains".into(), serde_json::json!(d));
    }
    if s.read_only {
        c.insert("readOnly".into(), true.into());
    }
    if !c.is_empty() {
        json["constraints"] = serde_json::Value::Object(c);
    }
    let input: PolicyInput = serde_json::from_value(json).unwrap();
    let mut p = Problems::new();
    validate_policy(
        &input,
        &s.tenant,
        &format!("pol_{i}"),
        PolicySource::Api,
        "",
        &mut p,
    )
    .unwrap_or_else(|| panic!("{p}"))
}

/// One generated request, engine-neutral.
#[derive(Clone, Debug)]
struct Ask {
    tenant: String,
    agent: String,
    action: &'static str,
    resource: String,
    rows: Option<u64>,
    recipients: Option<Vec<String>>,
}

fn requests(n_policies: usize, rng: &mut Rng) -> Vec<Ask> {
    let tenants = n_policies.div_ceil(POLICIES_PER_TENANT) as u64;
    (0..64)
        .map(|i| {
            let tenant = format!("tenant-{}", rng.below(tenants));
            let agent = format!("agent_{}", rng.below(AGENTS_PER_TENANT));
            let svc = rng.pick(SERVICES);
            let kind = rng.pick(KINDS);
            match i % 4 {
                0 => Ask {
                    tenant,
                    agent,
                    action: "read",
                    resource: format!("api://{svc}/{kind}/{}", rng.below(200)),
                    rows: Some(rng.below(200)),
                    recipients: None,
                },
                1 => Ask {
                    tenant,
                    agent,
                    action: "delete",
                    resource: format!("api://{svc}/{kind}/{}", rng.below(100)),
                    rows: None,
                    recipients: None,
                },
                2 => Ask {
                    tenant,
                    agent,
                    action: "send_email",
                    resource: "api://email/outbound".into(),
                    rows: None,
                    recipients: Some(vec![if rng.below(2) == 0 {
                        "bob@yourcompany.com".into()
                    } else {
                        "eve@evil.example".into()
                    }]),
                },
                _ => Ask {
                    tenant,
                    agent,
                    action: "list",
                    resource: format!("api://{svc}/{kind}/{}/notes", rng.below(10)),
                    rows: Some(10),
                    recipients: None,
                },
            }
        })
        .collect()
}

fn actgate_decide(set: &PolicySet, a: &Ask) -> bool {
    let who = Principal {
        tenant: &a.tenant,
        agent: &a.agent,
        policy_ids: None,
    };
    let q = Query {
        action: a.action,
        resource: &a.resource,
        facts: Facts {
            rows: a.rows,
            recipients: a.recipients.as_deref(),
            method: None,
            ..Facts::default()
        },
    };
    set.evaluate(&who, &q).is_allowed()
}

const SIZES: [usize; 3] = [10, 1_000, 100_000];

struct Workload {
    n: usize,
    set: PolicySet,
    compile: Duration,
    asks: Vec<Ask>,
    #[cfg(feature = "cedar")]
    cedar: cedar::Compiled,
}

fn workload(n: usize) -> Workload {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
    let specs = generate(n, &mut rng);
    let policies: Vec<Policy> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| to_policy(i, s))
        .collect();
    let start = Instant::now();
    let set = PolicySet::build(policies).unwrap();
    let compile = start.elapsed();
    let asks = requests(n, &mut rng);
    Workload {
        n,
        set,
        compile,
        #[cfg(feature = "cedar")]
        cedar: cedar::compile(&specs, &asks),
        asks,
    }
}

/// ns per decision over `rounds` passes of the request list.
fn time_per_decision(asks: usize, rounds: usize, mut f: impl FnMut(usize) -> bool) -> f64 {
    let start = Instant::now();
    let mut allowed = 0usize;
    for _ in 0..rounds {
        for i in 0..asks {
            allowed += black_box(f(i)) as usize;
        }
    }
    black_box(allowed);
    start.elapsed().as_nanos() as f64 / (rounds * asks) as f64
}

fn bench(c: &mut Criterion) {
    let loads: Vec<Workload> = SIZES.iter().map(|&n| workload(n)).collect();
    let mut group = c.benchmark_group("decide");
    for w in &loads {
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("actgate", w.n), w, |b, w| {
            b.iter(|| {
                i = (i + 1) % w.asks.len();
                actgate_decide(&w.set, &w.asks[i])
            })
        });
        #[cfg(feature = "cedar")]
        if w.n <= 1_000 {
            let mut i = 0;
            group.bench_with_input(BenchmarkId::new("cedar", w.n), w, |b, w| {
                b.iter(|| {
                    i = (i + 1) % w.asks.len();
                    w.cedar.decide(i)
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for &n in &SIZES[..2] {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
        let specs = generate(n, &mut rng);
        let policies: Vec<Policy> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| to_policy(i, s))
            .collect();
        group.bench_with_input(BenchmarkId::new("actgate", n), &policies, |b, p| {
            b.iter(|| PolicySet::build(p.clone()).unwrap())
        });
    }
    group.finish();

    summary(&loads);
}

/// The README table: ns/decision for both engines, one run, and the ratio.
fn summary(loads: &[Workload]) {
    println!();
    println!(
        "| policies | actgate compile | actgate ns/decision | cedar ns/decision (one set) | cedar / actgate | cedar ns/decision (set per tenant) | cedar per-tenant / actgate | allowed (of 64) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for w in loads {
        let allowed = w.asks.iter().filter(|a| actgate_decide(&w.set, a)).count();
        let ours = time_per_decision(w.asks.len(), 20_000, |i| actgate_decide(&w.set, &w.asks[i]));
        #[cfg(feature = "cedar")]
        let (theirs, ratio, part, part_ratio) = {
            let rounds = (20_000 / w.n.max(1)).clamp(1, 2_000);
            let t = time_per_decision(w.asks.len(), rounds, |i| w.cedar.decide(i));
            let disagree = (0..w.asks.len())
                .filter(|&i| w.cedar.decide(i) != actgate_decide(&w.set, &w.asks[i]))
                .count();
            assert_eq!(
                disagree, 0,
                "engines disagree on {disagree} requests at {} policies",
                w.n
            );
            let part = time_per_decision(w.asks.len(), 2_000, |i| w.cedar.decide_partitioned(i));
            let disagree = (0..w.asks.len())
                .filter(|&i| w.cedar.decide_partitioned(i) != actgate_decide(&w.set, &w.asks[i]))
                .count();
            assert_eq!(
                disagree, 0,
                "partitioned Cedar disagrees on {disagree} requests"
            );
            (
                format!("{t:.0}"),
                format!("{:.0}×", t / ours),
                format!("{part:.0}"),
                format!("{:.0}×", part / ours),
            )
        };
        #[cfg(not(feature = "cedar"))]
        let (theirs, ratio, part, part_ratio) = (
            "(--features cedar)".to_string(),
            "-".to_string(),
            "-".to_string(),
            "-".to_string(),
        );
        println!(
            "| {} | {:.1} ms | {ours:.0} | {theirs} | {ratio} | {part} | {part_ratio} | {allowed} |",
            w.n,
            w.compile.as_secs_f64() * 1e3
        );
    }
}

#[cfg(feature = "cedar")]
mod cedar {
    //! The same policies and requests in Cedar. Tenant, resource path and facts travel in the
    //! context; `*` within one segment is `like "p/*" && !(like "p/*/*")`.
    use std::collections::HashMap;

    use super::{Ask, Shape, Spec};
    use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, PolicySet, Request};

    pub struct Compiled {
        set: PolicySet,
        /// The same policies split into one set per tenant, as a Cedar deployment that
        /// partitions by tenant would hold them.
        by_tenant: HashMap<String, PolicySet>,
        requests: Vec<(String, Request)>,
        entities: Entities,
        authorizer: Authorizer,
    }

    impl Compiled {
        /// One decision against the whole policy set.
        pub fn decide(&self, i: usize) -> bool {
            self.authorizer
                .is_authorized(&self.requests[i].1, &self.set, &self.entities)
                .decision()
                == Decision::Allow
        }

        /// One decision against the request's tenant's policy set only.
        pub fn decide_partitioned(&self, i: usize) -> bool {
            let (tenant, request) = &self.requests[i];
            let Some(set) = self.by_tenant.get(tenant) else {
                return false;
            };
            self.authorizer
                .is_authorized(request, set, &self.entities)
                .decision()
                == Decision::Allow
        }
    }

    fn resource_cond(pattern: &str, shape: Shape) -> String {
        match shape {
            Shape::Literal => format!("context.path == \"{pattern}\""),
            Shape::OneSegment => {
                let prefix = pattern.trim_end_matches('*');
                format!("(context.path like \"{prefix}*\" && !(context.path like \"{prefix}*/*\"))")
            }
            Shape::Below => {
                let prefix = pattern.trim_end_matches('*');
                format!("context.path like \"{prefix}*\"")
            }
        }
    }

    pub fn compile(specs: &[Spec], asks: &[Ask]) -> Compiled {
        let mut text = String::new();
        let mut per_tenant: HashMap<String, String> = HashMap::new();
        for s in specs {
            let actions: Vec<String> = s
                .actions
                .iter()
                .map(|a| format!("Action::\"{a}\""))
                .collect();
            let principal = match &s.agents {
                None => "principal".to_string(),
                Some(a) => format!("principal == Agent::\"{}\"", a[0]),
            };
            let mut conds = vec![format!("context.tenant == \"{}\"", s.tenant)];
            let any: Vec<String> = s
                .resources
                .iter()
                .map(|(p, sh)| resource_cond(p, *sh))
                .collect();
            conds.push(format!("({})", any.join(" || ")));
            if let Some(n) = s.max_rows {
                conds.push(format!("(!(context has rows) || context.rows <= {n})"));
            }
            if let Some(d) = &s.domains {
                let list: Vec<String> = d.iter().map(|d| format!("\"{d}\"")).collect();
                conds.push(format!(
                    "(!(context has domains) || [{}].containsAll(context.domains))",
                    list.join(", ")
                ));
            }
            if s.read_only {
                conds.push(
                    "[\"read\", \"list\", \"query\", \"get\", \"search\"].contains(context.action)"
                        .into(),
                );
            }
            let policy = format!(
                "{}({principal}, action in [{}], resource) when {{ {} }};\n",
                if s.deny { "forbid" } else { "permit" },
                actions.join(", "),
                conds.join(" && ")
            );
            text.push_str(&policy);
            per_tenant
                .entry(s.tenant.clone())
                .or_default()
                .push_str(&policy);
        }
        let set: PolicySet = text.parse().expect("cedar policies parse");
        let by_tenant = per_tenant
            .into_iter()
            .map(|(t, src)| (t, src.parse().expect("cedar policies parse")))
            .collect();
        let requests = asks
            .iter()
            .map(|a| {
                let mut ctx = serde_json::json!({
                    "tenant": a.tenant,
                    "path": a.resource,
                    "action": a.action,
                });
                if let Some(r) = a.rows {
                    ctx["rows"] = r.into();
                }
                if let Some(list) = &a.recipients {
                    let domains: Vec<String> = list
                        .iter()
                        .map(|r| r.rsplit('@').next().unwrap_or_default().to_string())
                        .collect();
                    ctx["domains"] = serde_json::json!(domains);
                }
                let principal: EntityUid = format!("Agent::\"{}\"", a.agent).parse().unwrap();
                let action: EntityUid = format!("Action::\"{}\"", a.action).parse().unwrap();
                let resource: EntityUid = "Resource::\"r\"".parse().unwrap();
                let context = Context::from_json_value(ctx, None).unwrap();
                (
                    a.tenant.clone(),
                    Request::new(principal, action, resource, context, None).unwrap(),
                )
            })
            .collect();
        Compiled {
            set,
            by_tenant,
            requests,
            entities: Entities::empty(),
            authorizer: Authorizer::new(),
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
