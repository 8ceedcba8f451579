//! Configuration: YAML → raw types → one validation pass → the compiled [`Config`].
//!
//! Owns parsing and validation only: no sockets, no files other than the one it reads. Every
//! problem is reported with its path (`routes[2].resource: unknown placeholder {cid}`), all
//! at once; nothing is silently ignored.

pub mod lint;
mod mcp;
mod raw;

pub use mcp::is_tool_name;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Uri};
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::error::{Problems, index, join};
use crate::policy::model::{id_from_name, is_action, is_identifier};
use crate::policy::{Policy, PolicyInput, PolicySource, validate_policy};
use crate::proxy::route::{
    Mode, ResourceTemplate, Route, RouteTable, RowSource, parse_path_template,
};
use crate::store::Role;
use raw::*;

/// The shipped example config, compiled into the binary: `actgate serve` runs on it when no
/// config file is given and `config/actgate.yaml` does not exist.
pub const EMBEDDED: &str = include_str!("../../config/actgate.yaml");

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not valid.
    #[error("{0}")]
    Invalid(Problems),
}

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Data plane.
    pub proxy: SocketAddr,
    /// Control plane (REST API).
    pub api: SocketAddr,
    /// Metrics and health.
    pub admin: SocketAddr,
    /// Threads serving the proxy listener, each with its own single-threaded runtime: every
    /// connection lives on one thread, with its upstream connections (default: one per CPU
    /// the process may run on).
    pub workers: usize,
}

/// Most proxy worker threads.
pub const MAX_WORKERS: u64 = 256;

/// One worker per CPU the process may run on (its affinity mask, cgroup quota included).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where an API key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The value of an environment variable (skipped, with a warning, when unset).
    Env(String),
    /// The SHA-256 of the key.
    Sha256([u8; 32]),
}

/// One configured API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// Name, for logs.
    pub name: String,
    /// Where the key comes from.
    pub source: KeySource,
    /// The tenant it acts for.
    pub tenant: String,
    /// What it may do (default `admin`, what every key could do before roles existed).
    pub role: Role,
    /// For an `issuer`: the only agents it may issue and revoke tokens for.
    pub agents: Option<Vec<String>>,
}

/// Control-plane options (`api:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// False makes policies config-only: `POST`/`PUT`/`DELETE /v1/policies` answer 403.
    pub policy_writes: bool,
}

/// An agent defined in the config ("agents as code"): known to every replica without a shared
/// store, read-only through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigAgent {
    /// `agent_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Human name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// False when `status: revoked`.
    pub active: bool,
    /// Its tokens need its own client certificate.
    pub sender_constrained: bool,
}

/// Capability token settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// Lifetime when none is asked for.
    pub default_ttl: Duration,
    /// Longest lifetime a token may be issued with.
    pub max_ttl: Duration,
    /// Tolerance on `nbf` and `exp`.
    pub clock_skew: Duration,
    /// Most verified tokens kept in the cache (0 disables it).
    pub cache_capacity: usize,
    /// Threads verifying signatures at once; more requests wait their turn. Bounds the CPU a
    /// flood of forged tokens can take; cached tokens never wait for it.
    pub max_concurrent_verifications: usize,
    /// The signing keys' directory, when not `<dataDir>/keys` (e.g. a mounted Secret shared
    /// by replicas).
    pub keys_dir: Option<PathBuf>,
}

/// When an audit record must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync'd before the request is forwarded or the enforce answer sent.
    Strict,
    /// fsync'd every `flushInterval`.
    Batched,
    /// No audit records at all (benchmark baselines, or when another layer audits).
    /// Decisions are still logged and counted; actgate warns at start.
    Off,
}

/// What a full audit queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for room (backpressure).
    Block,
    /// Deny the request.
    Deny,
}

/// Audit log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Strict or batched.
    pub durability: Durability,
    /// Block or deny when the queue is full.
    pub on_full: OnFull,
    /// Records the queue holds (each ~1 KiB of memory while it waits).
    pub queue_capacity: usize,
    /// Segment size before rotation.
    pub segment_max_bytes: u64,
    /// Group-commit interval in batched mode.
    pub flush_interval: Duration,
    /// Records between signed checkpoints.
    pub checkpoint_every: u64,
    /// Unauthenticated refusals recorded one by one per second; beyond it they are counted
    /// into one summary record per reason each second.
    pub refusal_rate: u64,
    /// Store MCP tool-call arguments in audit records (default: only their SHA-256; they may
    /// hold personal data).
    pub mcp_arguments: bool,
}

/// Request limits of the proxy and API listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body read or forwarded.
    pub max_body_bytes: usize,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Most concurrent connections per listener.
    pub max_connections: usize,
    /// Deepest JSON nesting accepted in a body that is inspected.
    pub max_json_depth: usize,
    /// Most bodies buffered for inspection at once (the rest wait).
    pub max_buffered_bodies: usize,
    /// Time allowed to receive a body that must be inspected.
    pub body_read_timeout: Duration,
    /// Time allowed to receive a request head (and a new connection's first bytes, and a TLS
    /// handshake); client connections idle between requests are closed after it too.
    pub header_read_timeout: Duration,
    /// Idle pooled connections to upstreams are closed after this.
    pub idle_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown.
    pub drain_timeout: Duration,
}

/// Metrics options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Count decisions per agent id (`actgate_agent_decisions_total`); off by default, since
    /// agent ids are unbounded.
    pub per_agent_labels: bool,
    /// Most distinct agent ids labelled; the rest count as `other`.
    pub max_agent_labels: usize,
}

/// A local MCP server actgate runs as a child process and speaks to over stdio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioCommand {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Environment variables set for it (on top of a minimal `PATH`, `HOME`, `LANG`).
    pub env: BTreeMap<String, String>,
}

/// Where an upstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// An HTTP(S) server: scheme and authority, and for MCP upstreams a path (the MCP
    /// endpoint, e.g. `/mcp`). Routes forward the request's own path, so their upstreams have
    /// none.
    Http(Uri),
    /// A child process speaking MCP over stdio (MCP entries only).
    Stdio(StdioCommand),
}

/// One upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Name.
    pub name: String,
    /// Where it is.
    pub target: UpstreamTarget,
    /// Time allowed for the upstream's response head.
    pub timeout: Duration,
    /// CA bundle the upstream's certificate must chain to (https; default: Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key presented to the upstream (https).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Name sent as SNI and checked against the certificate, when not the URL's host.
    pub server_name: Option<String>,
}

/// Whether a listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// The handshake fails without a valid client certificate.
    Required,
    /// A client certificate is verified when presented.
    Optional,
}

/// Which SAN of a client certificate names the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    /// A URI SAN, e.g. a SPIFFE ID.
    Uri,
    /// A DNS SAN.
    Dns,
}

/// How a client certificate maps to an agent, for sender-constrained tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRule {
    /// The SAN kind to read.
    pub san: SanKind,
    /// The SAN an agent's workload presents, `{agent}` standing for the agent id, e.g.
    /// `spiffe://example.org/agent/{agent}`.
    pub template: String,
}

/// TLS of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle client certificates must chain to (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Required or optional client certificates (with `client_ca`).
    pub client_auth: ClientAuth,
    /// Client-certificate identity rule (proxy only).
    pub identity: Option<IdentityRule>,
}

/// TLS of the listeners; `None` serves plain HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The proxy listener.
    pub proxy: Option<TlsSettings>,
    /// The API listener.
    pub api: Option<TlsSettings>,
}

/// Where the PostgreSQL URL comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PgUrl {
    /// Written in the config (a secret in a file: prefer `fromEnv`).
    Inline(String),
    /// The value of an environment variable, read at start.
    Env(String),
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgUrl::Inline(u) => write!(f, "Inline({})", crate::store::postgres::redact(u)),
            PgUrl::Env(v) => write!(f, "Env({v})"),
        }
    }
}

impl PgUrl {
    /// The URL: as written, or read from its environment variable now.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            PgUrl::Inline(u) => Ok(u.clone()),
            PgUrl::Env(var) => match std::env::var(var) {
                Ok(u) if !u.trim().is_empty() => Ok(u),
                _ => Err(format!(
                    "store.postgres.fromEnv: the environment variable {var} is not set (it must hold postgres://user:password@host:5432/db)"
                )),
            },
        }
    }
}

/// `store.postgres`: the shared store of several replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The URL (`postgres://user:password@host:port/db?sslmode=require`).
    pub url: PgUrl,
    /// Most pooled connections.
    pub max_connections: usize,
    /// CA bundle for TLS to the database.
    pub ca_file: Option<PathBuf>,
    /// Apply pending migrations at start (else `actgate migrate` must have).
    pub migrate: bool,
}

/// The `store` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// PostgreSQL, for several replicas; `None`: the embedded SQLite in `dataDir`.
    pub postgres: Option<PostgresSettings>,
    /// How long decisions continue from the last snapshot while the store is unreachable;
    /// after that they fail closed (503, `store_unavailable`).
    pub max_staleness: Duration,
    /// How often the store's change counter is read (notifications aside).
    pub poll_interval: Duration,
    /// This replica's name in the shared audit index (default: `$HOSTNAME`, else the host
    /// name).
    pub replica_id: String,
}

/// Live reload of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Watch the config file (and TLS files) and reload when they change.
    pub watch: bool,
    /// How often to look.
    pub interval: Duration,
}

/// A validated, compiled config.
#[derive(Debug)]
pub struct Config {
    /// Where it came from: a path or `embedded`.
    pub origin: String,
    /// Listener addresses.
    pub listen: Listen,
    /// The store: embedded SQLite, or PostgreSQL.
    pub store: StoreSettings,
    /// Store, keys and audit log live here.
    pub data_dir: PathBuf,
    /// Tenant of config-defined keys and policies, and of records made before a token names
    /// one (shared: a refusal's record takes a reference, not a copy).
    pub tenant: Arc<str>,
    /// Configured API keys.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Control-plane options.
    pub api: ApiSettings,
    /// Agents as code.
    pub agents: Vec<ConfigAgent>,
    /// Token settings.
    pub tokens: TokenSettings,
    /// Audit settings.
    pub audit: AuditSettings,
    /// Request limits.
    pub limits: Limits,
    /// Metrics options.
    pub metrics: MetricsSettings,
    /// Listener TLS.
    pub tls: TlsConfig,
    /// Live reload.
    pub reload: ReloadSettings,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Routes, matched.
    pub routes: Arc<RouteTable>,
    /// MCP endpoints.
    pub mcp: Arc<crate::mcp::endpoint::McpTable>,
    /// Policies as code.
    pub policies: Vec<Policy>,
}

impl Default for Config {
    /// The config an empty file gives: every default.
    fn default() -> Self {
        Config::parse("", "default").expect("the empty config is valid")
    }
}

impl Config {
    /// The signing keys' directory: `tokens.keysDir`, else `<dataDir>/keys`.
    pub fn keys_dir(&self) -> PathBuf {
        self.tokens
            .keys_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string()).map_err(ConfigError::Invalid)
    }

    /// Loads `path` if given; else `config/actgate.yaml` if it exists; else the embedded copy.
    pub fn load_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::load(p),
            None => {
                let local = Path::new("config/actgate.yaml");
                if local.exists() {
                    Config::load(local)
                } else {
                    Config::parse(EMBEDDED, "embedded").map_err(ConfigError::Invalid)
                }
            }
        }
    }

    /// Parses and validates YAML text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, Problems> {
        let mut p = Problems::new();
        let doc: Value = match serde_yaml::from_str(text) {
            Ok(Value::Null) => Value::Mapping(Default::default()),
            Ok(v) => v,
            Err(e) => {
                p.push("", format!("not valid YAML: {e}"));
                return Err(p);
            }
        };
        let Value::Mapping(map) = doc else {
            p.push(
                "",
                "the config must be a mapping of sections (listen, routes, ...)",
            );
            return Err(p);
        };
        let mut sections: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in map {
            match k.as_str() {
                Some(name) if TOP_LEVEL_KEYS.contains(&name) => {
                    sections.insert(name.to_string(), v);
                }
                Some(name) => p.push(
                    name,
                    format!("unknown section; known: {}", TOP_LEVEL_KEYS.join(", ")),
                ),
                None => p.push("", format!("section names are strings, got {k:?}")),
            }
        }
        let mut take = |name: &str| sections.remove(name).filter(|v| !v.is_null());

        let listen = compile_listen(take("listen"), &mut p);
        let store = compile_store(take("store"), &mut p);
        let data_dir =
            typed::<String>(take("dataDir"), "dataDir", &mut p).unwrap_or_else(|| "./data".into());
        if data_dir.trim().is_empty() {
            p.push("dataDir", "must not be empty");
        }
        let tenant = typed::<String>(take("tenant"), "tenant", &mut p)
            .unwrap_or_else(|| "default-tenant".into());
        if !is_tenant(&tenant) {
            p.push(
                "tenant",
                "a tenant id is 1–64 letters, digits, `_`, `-` or `.`",
            );
        }
        let api_keys = compile_api_keys(take("apiKeys"), &tenant, &mut p);
        let api = compile_api(take("api"), &mut p);
        let agents = compile_agents(take("agents"), &tenant, &mut p);
        let tokens = compile_tokens(take("tokens"), &mut p);
        let audit = compile_audit(take("audit"), &mut p);
        let limits = compile_limits(take("limits"), &mut p);
        let metrics = compile_metrics(take("metrics"), &mut p);
        let tls = compile_tls(take("tls"), &mut p);
        let reload = compile_reload(take("reload"), &mut p);
        let (upstreams, declared) = compile_upstreams(take("upstreams"), &mut p);
        let routes = compile_routes(take("routes"), &upstreams, &declared, &mut p);
        let mcp = mcp::compile(take("mcp"), &upstreams, &declared, &routes, &mut p);
        // Agent ids are unique within a tenant only: with several tenants, a certificate
        // naming just the agent could be one another tenant's agent of the same id holds.
        let mut tenants: Vec<&str> = api_keys.iter().map(|k| k.tenant.as_str()).collect();
        tenants.push(&tenant);
        tenants.sort_unstable();
        tenants.dedup();
        if tenants.len() > 1
            && let Some(rule) = tls.proxy.as_ref().and_then(|t| t.identity.as_ref())
            && !rule.template.contains("{tenant}")
        {
            p.push(
                "tls.proxy.identity.template",
                format!(
                    "several tenants are configured ({}) and agent ids are unique only within a tenant: put {{tenant}} in the template too, e.g. spiffe://example.org/tenant/{{tenant}}/agent/{{agent}}",
                    tenants.join(", ")
                ),
            );
        }
        if tls
            .proxy
            .as_ref()
            .is_none_or(|t| t.identity.is_none() || t.client_ca.is_none())
            && let Some(r) = routes.routes().iter().find(|r| r.sender_constrained)
        {
            p.push(
                "tls.proxy",
                format!(
                    "route {} is senderConstrained: set tls.proxy.clientCa and tls.proxy.identity so client certificates can be checked",
                    r.name
                ),
            );
        }
        let policies = compile_policies(take("policies"), &tenant, &mut p);

        p.into_result(())?;
        Ok(Config {
            origin: origin.to_string(),
            listen,
            store,
            data_dir: PathBuf::from(data_dir),
            tenant: tenant.into(),
            api_keys,
            api,
            agents,
            tokens,
            audit,
            limits,
            metrics,
            tls,
            reload,
            upstreams,
            routes: Arc::new(routes),
            mcp: Arc::new(mcp),
            policies,
        })
    }
}

/// The longest `tokens.maxTtl` accepted: 30 days.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Records a problem at `path` unless `min ≤ value ≤ max`. Every duration is bounded, so no
/// later `Instant + duration` can overflow.
fn duration_in(p: &mut Problems, path: &str, value: Duration, min: Duration, max: Duration) {
    if value < min || value > max {
        p.push(
            path,
            format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        );
    }
}

/// A tenant id: 1–64 of letters, digits, `_`, `-`, `.`.
pub fn is_tenant(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Deserializes one value, recording a failure with its full path.
fn typed<T: DeserializeOwned>(value: Option<Value>, path: &str, p: &mut Problems) -> Option<T> {
    let mut value = value?;
    // One typo must not hide the other problems of its section: after each error, the key
    // it names is taken out and the rest read again (a value with problems is still refused).
    let mut failed = false;
    for _ in 0..32 {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return (!failed).then_some(t),
            Err(e) => {
                failed = true;
                let inner = e.path().to_string();
                let at = if inner == "." {
                    path.to_string()
                } else {
                    join(path, &inner)
                };
                let segments: Vec<serde_path_to_error::Segment> =
                    e.path().iter().cloned().collect();
                p.push(at, e.into_inner().to_string());
                if !remove_key(&mut value, &segments) {
                    return None;
                }
            }
        }
    }
    None
}

/// Removes the mapping key `path` ends with; false when it does not end with one that exists.
fn remove_key(value: &mut Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for seg in parents {
        at = match (seg, at) {
            (Segment::Map { key }, Value::Mapping(m)) => match m.get_mut(key.as_str()) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Sequence(items)) => match items.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, at) {
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// Deserializes each element of a list section separately, so one bad element does not hide
/// the problems of the others.
fn typed_list<T: DeserializeOwned>(
    value: Option<Value>,
    path: &str,
    p: &mut Problems,
) -> Vec<Option<T>> {
    match value {
        None => Vec::new(),
        Some(Value::Sequence(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| typed::<T>(Some(v), &index(path, i), p))
            .collect(),
        Some(_) => {
            p.push(path, "must be a list");
            Vec::new()
        }
    }
}

fn required<'a>(
    v: &'a Option<String>,
    path: String,
    hint: &str,
    p: &mut Problems,
) -> Option<&'a str> {
    match v.as_deref() {
        Some(s) if !s.trim().is_empty() => Some(s),
        Some(_) => {
            p.push(path, format!("must not be empty; {hint}"));
            None
        }
        None => {
            p.push(path, format!("required; {hint}"));
            None
        }
    }
}

fn compile_listen(v: Option<Value>, p: &mut Problems) -> Listen {
    let raw = typed::<RawListen>(v, "listen", p).unwrap_or_default();
    let mut addr = |given: Option<String>, field: &str, default: &str| -> SocketAddr {
        let text = given.unwrap_or_else(|| default.to_string());
        text.parse().unwrap_or_else(|_| {
            p.push(
                format!("listen.{field}"),
                format!("`{text}` is not an address; write IP:port, e.g. {default}"),
            );
            default.parse().expect("default address parses")
        })
    };
    let listen = Listen {
        proxy: addr(raw.proxy, "proxy", "127.0.0.1:8080"),
        api: addr(raw.api, "api", "127.0.0.1:8081"),
        admin: addr(raw.admin, "admin", "127.0.0.1:9464"),
        workers: match raw.workers {
            None => default_workers(),
            Some(n) if (1..=MAX_WORKERS).contains(&n) => n as usize,
            Some(n) => {
                p.push(
                    "listen.workers",
                    format!("{n} is out of range; write 1 to {MAX_WORKERS}, or leave it out for one per CPU"),
                );
                1
            }
        },
    };
    let all = [
        ("proxy", listen.proxy),
        ("api", listen.api),
        ("admin", listen.admin),
    ];
    for (i, (a, x)) in all.iter().enumerate() {
        for (b, y) in &all[i + 1..] {
            if x == y && x.port() != 0 {
                p.push(
                    format!("listen.{b}"),
                    format!("same address as listen.{a} ({x}); each listener needs its own port"),
                );
            }
        }
    }
    listen
}

fn compile_api_keys(v: Option<Value>, tenant: &str, p: &mut Problems) -> Vec<ApiKeyConfig> {
    let mut keys = Vec::new();
    let mut names = HashSet::new();
    for (i, raw) in typed_list::<RawApiKey>(v, "apiKeys", p)
        .into_iter()
        .enumerate()
    {
        let at = index("apiKeys", i);
        let Some(raw) = raw else { continue };
        let name = required(&raw.name, join(&at, "name"), "name the key, e.g. admin", p);
        if let Some(n) = name
            && !names.insert(n.to_string())
        {
            p.push(join(&at, "name"), format!("duplicate key name `{n}`"));
        }
        let key_tenant = raw.tenant.clone().unwrap_or_else(|| tenant.to_string());
        if !is_tenant(&key_tenant) {
            p.push(
                join(&at, "tenant"),
                "a tenant id is 1–64 letters, digits, `_`, `-` or `.`",
            );
        }
        let source = match (&raw.from_env, &raw.sha256) {
            (Some(var), None) if !var.is_empty() => Some(KeySource::Env(var.clone())),
            (None, Some(hexed)) => {
                let mut out = [0u8; 32];
                match hex::decode_to_slice(hexed.trim(), &mut out) {
                    Ok(()) => Some(KeySource::Sha256(out)),
                    Err(_) => {
                        p.push(
                            join(&at, "sha256"),
                            "must be 64 hex digits: the SHA-256 of the key (`printf %s \"$KEY\" | sha256sum`)",
                        );
                        None
                    }
                }
            }
            (Some(_), Some(_)) => {
                p.push(at.clone(), "give either fromEnv or sha256, not both");
                None
            }
            _ => {
                p.push(
                    at.clone(),
                    "give fromEnv (an environment variable holding the key) or sha256 (its hash)",
                );
                None
            }
        };
        let role = match raw.role.as_deref() {
            None => Role::Admin,
            Some(r) => Role::parse(r).unwrap_or_else(|| {
                p.push(
                    join(&at, "role"),
                    format!("`{r}` is not a role; use admin, issuer, enforcer or auditor"),
                );
                Role::Admin
            }),
        };
        if let Some(agents) = &raw.agents {
            if role != Role::Issuer {
                p.push(
                    join(&at, "agents"),
                    "only an issuer key is limited to agents; remove `agents` or set `role: issuer`",
                );
            }
            if agents.is_empty() {
                p.push(
                    join(&at, "agents"),
                    "an empty list allows no agent; list agent ids or leave `agents` out",
                );
            }
            for (j, a) in agents.iter().enumerate() {
                if !is_identifier(a, "agent_") {
                    p.push(
                        format!("{at}.agents[{j}]"),
                        "must be an agent id: `agent_` followed by letters, digits, `_` or `-`",
                    );
                }
            }
        }
        if let (Some(name), Some(source)) = (name, source) {
            keys.push(ApiKeyConfig {
                name: name.to_string(),
                source,
                tenant: key_tenant,
                role,
                agents: raw.agents,
            });
        }
    }
    keys
}

fn compile_api(v: Option<Value>, p: &mut Problems) -> ApiSettings {
    let raw = typed::<RawApi>(v, "api", p).unwrap_or_default();
    ApiSettings {
        policy_writes: raw.policy_writes.unwrap_or(true),
    }
}

fn compile_agents(v: Option<Value>, tenant: &str, p: &mut Problems) -> Vec<ConfigAgent> {
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for (i, raw) in typed_list::<RawAgent>(v, "agents", p)
        .into_iter()
        .enumerate()
    {
        let at = index("agents", i);
        let Some(raw) = raw else { continue };
        let id = required(&raw.id, join(&at, "id"), "e.g. agent_support", p).map(str::to_string);
        if let Some(id) = &id {
            if !is_identifier(id, "agent_") {
                p.push(
                    join(&at, "id"),
                    "must be `agent_` followed by letters, digits, `_` or `-`",
                );
            }
            if !ids.insert(id.clone()) {
                p.push(join(&at, "id"), format!("duplicate agent id `{id}`"));
            }
        }
        let name = required(&raw.name, join(&at, "name"), "name the agent", p).map(str::to_string);
        let agent_tenant = raw.tenant.clone().unwrap_or_else(|| tenant.to_string());
        if !is_tenant(&agent_tenant) {
            p.push(
                join(&at, "tenant"),
                "a tenant id is 1–64 letters, digits, `_`, `-` or `.`",
            );
        }
        let active = match raw.status.as_deref() {
            None | Some("active") => true,
            Some("revoked") => false,
            Some(other) => {
                p.push(
                    join(&at, "status"),
                    format!("`{other}` is not a status; use `active` or `revoked`"),
                );
                true
            }
        };
        if let (Some(id), Some(name)) = (id, name) {
            out.push(ConfigAgent {
                id,
                tenant: agent_tenant,
                name,
                description: raw.description,
                active,
                sender_constrained: raw.sender_constrained.unwrap_or(false),
            });
        }
    }
    out
}

fn compile_tokens(v: Option<Value>, p: &mut Problems) -> TokenSettings {
    let raw = typed::<RawTokens>(v, "tokens", p).unwrap_or_default();
    let t = TokenSettings {
        default_ttl: raw.default_ttl.map_or(Duration::from_secs(3600), |d| d.0),
        max_ttl: raw.max_ttl.map_or(Duration::from_secs(24 * 3600), |d| d.0),
        clock_skew: raw.clock_skew.map_or(Duration::from_secs(30), |d| d.0),
        cache_capacity: raw.cache_capacity.unwrap_or(100_000) as usize,
        max_concurrent_verifications: raw.max_concurrent_verifications.unwrap_or(1) as usize,
        keys_dir: raw.keys_dir.map(PathBuf::from),
    };
    if t.keys_dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        p.push(
            "tokens.keysDir",
            "must not be empty; leave it out for <dataDir>/keys",
        );
    }
    if t.max_ttl < Duration::from_secs(1) || t.max_ttl > MAX_TOKEN_TTL {
        p.push(
            "tokens.maxTtl",
            "must be between 1s and 30d (capability tokens are short-lived; revoke, do not wait)",
        );
    }
    if t.default_ttl < Duration::from_secs(1) {
        p.push("tokens.defaultTtl", "must be at least 1s");
    }
    if t.default_ttl > t.max_ttl {
        p.push("tokens.defaultTtl", "must not exceed tokens.maxTtl");
    }
    if t.clock_skew > Duration::from_secs(300) {
        p.push(
            "tokens.clockSkew",
            "must not exceed 5m: a large skew extends every token's life",
        );
    }
    if t.cache_capacity > 10_000_000 {
        p.push("tokens.cacheCapacity", "must not exceed 10000000");
    }
    if !(1..=256).contains(&t.max_concurrent_verifications) {
        p.push(
            "tokens.maxConcurrentVerifications",
            "must be between 1 and 256",
        );
    }
    t
}

fn compile_audit(v: Option<Value>, p: &mut Problems) -> AuditSettings {
    let raw = typed::<RawAudit>(v, "audit", p).unwrap_or_default();
    let durability = match raw.durability.as_deref() {
        None | Some("batched") => Durability::Batched,
        Some("strict") => Durability::Strict,
        Some("off") => Durability::Off,
        Some(other) => {
            p.push(
                "audit.durability",
                format!("`{other}` is not a mode; use `strict`, `batched` or `off`"),
            );
            Durability::Batched
        }
    };
    let on_full = match raw.on_full.as_deref() {
        None | Some("block") => OnFull::Block,
        Some("deny") => OnFull::Deny,
        Some(other) => {
            p.push(
                "audit.onFull",
                format!("`{other}` is not a behaviour; use `block` or `deny`"),
            );
            OnFull::Block
        }
    };
    let a = AuditSettings {
        durability,
        on_full,
        // ~1 KiB of memory per waiting record: 16,384 absorb a half-second disk stall at
        // 30k requests/s in ≤ 16 MiB; beyond that the queue applies `onFull`.
        queue_capacity: raw.queue_capacity.unwrap_or(16_384) as usize,
        segment_max_bytes: raw.segment_max_bytes.unwrap_or(64 << 20),
        flush_interval: raw.flush_interval.map_or(Duration::from_millis(5), |d| d.0),
        checkpoint_every: raw.checkpoint_every.unwrap_or(10_000),
        refusal_rate: raw.refusal_rate.unwrap_or(1000),
        mcp_arguments: raw.mcp_arguments.unwrap_or(false),
    };
    if a.refusal_rate > 1_000_000 {
        p.push("audit.refusalRate", "must be between 0 and 1000000");
    }
    if !(1..=1 << 24).contains(&a.queue_capacity) {
        p.push("audit.queueCapacity", "must be between 1 and 16777216");
    }
    if !(4096..=1 << 40).contains(&a.segment_max_bytes) {
        p.push(
            "audit.segmentMaxBytes",
            "must be between 4096 and 1099511627776 (1 TiB)",
        );
    }
    if a.flush_interval.is_zero() || a.flush_interval > Duration::from_secs(1) {
        p.push("audit.flushInterval", "must be between 1ms and 1s");
    }
    if !(1..=1_000_000_000).contains(&a.checkpoint_every) {
        p.push("audit.checkpointEvery", "must be between 1 and 1000000000");
    }
    a
}

fn compile_limits(v: Option<Value>, p: &mut Problems) -> Limits {
    let raw = typed::<RawLimits>(v, "limits", p).unwrap_or_default();
    let mut bounded = |value: Option<u64>, field: &str, default: u64, min: u64, max: u64| {
        let n = value.unwrap_or(default);
        if !(min..=max).contains(&n) {
            p.push(
                format!("limits.{field}"),
                format!("must be between {min} and {max}"),
            );
        }
        n as usize
    };
    let l = Limits {
        max_body_bytes: bounded(raw.max_body_bytes, "maxBodyBytes", 1 << 20, 1, 1 << 30),
        max_header_bytes: bounded(
            raw.max_header_bytes,
            "maxHeaderBytes",
            16 << 10,
            1024,
            1 << 20,
        ),
        max_headers: bounded(raw.max_headers, "maxHeaders", 100, 8, 1000),
        max_connections: bounded(raw.max_connections, "maxConnections", 10_000, 1, 1_000_000),
        max_json_depth: bounded(raw.max_json_depth, "maxJsonDepth", 32, 1, 256),
        max_buffered_bodies: bounded(
            raw.max_buffered_bodies,
            "maxBufferedBodies",
            256,
            1,
            100_000,
        ),
        body_read_timeout: raw
            .body_read_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        header_read_timeout: raw
            .header_read_timeout
            .map_or(Duration::from_secs(10), |d| d.0),
        idle_timeout: raw.idle_timeout.map_or(Duration::from_secs(60), |d| d.0),
        drain_timeout: raw.drain_timeout.map_or(Duration::from_secs(25), |d| d.0),
    };
    duration_in(
        p,
        "limits.headerReadTimeout",
        l.header_read_timeout,
        MS,
        HOUR,
    );
    duration_in(p, "limits.bodyReadTimeout", l.body_read_timeout, MS, HOUR);
    duration_in(p, "limits.idleTimeout", l.idle_timeout, MS, DAY);
    duration_in(
        p,
        "limits.drainTimeout",
        l.drain_timeout,
        Duration::ZERO,
        HOUR,
    );
    l
}

fn compile_metrics(v: Option<Value>, p: &mut Problems) -> MetricsSettings {
    let raw = typed::<RawMetrics>(v, "metrics", p).unwrap_or_default();
    let m = MetricsSettings {
        per_agent_labels: raw.per_agent_labels.unwrap_or(false),
        max_agent_labels: raw.max_agent_labels.unwrap_or(100) as usize,
    };
    if !(1..=10_000).contains(&m.max_agent_labels) {
        p.push("metrics.maxAgentLabels", "must be between 1 and 10000");
    }
    m
}

/// The machine's name, for the default replica id.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "actgate".into())
}

fn compile_store(v: Option<Value>, p: &mut Problems) -> StoreSettings {
    let raw = typed::<RawStore>(v, "store", p).unwrap_or_default();
    let postgres = raw.postgres.and_then(|pg| {
        let url = match (pg.url, pg.from_env) {
            (Some(u), None) => {
                if u.parse::<tokio_postgres::Config>().is_err() {
                    p.push(
                        "store.postgres.url",
                        "not a PostgreSQL URL; write postgres://user:password@host:5432/db (better: fromEnv: ACTGATE_POSTGRES_URL, the URL holds a password)",
                    );
                    return None;
                }
                PgUrl::Inline(u)
            }
            (None, Some(var)) if !var.trim().is_empty() => PgUrl::Env(var),
            (Some(_), Some(_)) => {
                p.push("store.postgres", "give url or fromEnv, not both");
                return None;
            }
            _ => {
                p.push(
                    "store.postgres",
                    "needs fromEnv (the variable holding postgres://user:password@host:5432/db) or url",
                );
                return None;
            }
        };
        let max_connections = pg.max_connections.unwrap_or(8);
        if !(1..=256).contains(&max_connections) {
            p.push("store.postgres.maxConnections", "must be 1 to 256");
        }
        Some(PostgresSettings {
            url,
            max_connections: max_connections as usize,
            ca_file: pg.ca_file.map(PathBuf::from),
            migrate: pg.migrate.unwrap_or(true),
        })
    });
    let s = StoreSettings {
        postgres,
        max_staleness: raw.max_staleness.map_or(Duration::from_secs(30), |d| d.0),
        poll_interval: raw.poll_interval.map_or(Duration::from_secs(1), |d| d.0),
        replica_id: raw.replica_id.unwrap_or_else(host_name),
    };
    duration_in(
        p,
        "store.maxStaleness",
        s.max_staleness,
        Duration::from_secs(1),
        HOUR,
    );
    duration_in(
        p,
        "store.pollInterval",
        s.poll_interval,
        Duration::from_millis(100),
        Duration::from_secs(60),
    );
    if s.poll_interval >= s.max_staleness {
        p.push(
            "store.pollInterval",
            "must be shorter than store.maxStaleness (each poll is what keeps the snapshot fresh)",
        );
    }
    if s.replica_id.is_empty()
        || s.replica_id.len() > 128
        || !s
            .replica_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        p.push(
            "store.replicaId",
            "1–128 letters, digits, `-`, `_` or `.` (default: the host name)",
        );
    }
    s
}

fn compile_reload(v: Option<Value>, p: &mut Problems) -> ReloadSettings {
    let raw = typed::<RawReload>(v, "reload", p).unwrap_or_default();
    let r = ReloadSettings {
        watch: raw.watch.unwrap_or(true),
        interval: raw.interval.map_or(Duration::from_secs(2), |d| d.0),
    };
    duration_in(
        p,
        "reload.interval",
        r.interval,
        Duration::from_millis(100),
        HOUR,
    );
    r
}

fn compile_tls(v: Option<Value>, p: &mut Problems) -> TlsConfig {
    let raw = typed::<RawTls>(v, "tls", p).unwrap_or_default();
    let mut listener = |raw: Option<RawTlsListener>,
                        at: &str,
                        proxy: bool|
     -> Option<TlsSettings> {
        let raw = raw?;
        let cert = required(
            &raw.cert,
            join(at, "cert"),
            "a PEM certificate chain file",
            p,
        )?
        .to_string();
        let key = required(&raw.key, join(at, "key"), "a PEM private key file", p)?.to_string();
        let client_auth = match raw.client_auth.as_deref() {
            None | Some("required") => ClientAuth::Required,
            Some("optional") => ClientAuth::Optional,
            Some(other) => {
                p.push(
                    join(at, "clientAuth"),
                    format!("`{other}` is not a mode; use `required` or `optional`"),
                );
                ClientAuth::Required
            }
        };
        if raw.client_auth.is_some() && raw.client_ca.is_none() {
            p.push(
                join(at, "clientAuth"),
                "needs clientCa: the CA bundle client certificates must chain to",
            );
        }
        let identity = match raw.identity {
            None => None,
            Some(_) if !proxy => {
                p.push(
                    join(at, "identity"),
                    "only the proxy listener checks client identities",
                );
                None
            }
            Some(id) => {
                let san = match id.san.as_deref() {
                    Some("uri") | None => SanKind::Uri,
                    Some("dns") => SanKind::Dns,
                    Some(other) => {
                        p.push(
                            join(at, "identity.san"),
                            format!("`{other}` is not a SAN kind; use `uri` or `dns`"),
                        );
                        SanKind::Uri
                    }
                };
                match id.template.as_deref() {
                    Some(t)
                        if t.matches("{agent}").count() == 1
                            && t.matches("{tenant}").count() <= 1 =>
                    {
                        Some(IdentityRule {
                            san,
                            template: t.to_string(),
                        })
                    }
                    _ => {
                        p.push(
                            join(at, "identity.template"),
                            "must contain {agent} exactly once (and {tenant} at most once), e.g. spiffe://example.org/agent/{agent}",
                        );
                        None
                    }
                }
            }
        };
        let settings = TlsSettings {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
            client_ca: raw.client_ca.map(PathBuf::from),
            client_auth,
            identity,
        };
        // Load everything now: a config that validates is one that serves.
        if let Err(e) = crate::tls::server_config(&settings) {
            p.push(at.to_string(), e);
        }
        Some(settings)
    };
    TlsConfig {
        proxy: listener(raw.proxy, "tls.proxy", true),
        api: listener(raw.api, "tls.api", false),
    }
}

/// The upstreams that compiled, and the names of every upstream declared (so a route naming a
/// declared but broken upstream is not also told it does not exist).
fn compile_upstreams(
    v: Option<Value>,
    p: &mut Problems,
) -> (BTreeMap<String, Upstream>, HashSet<String>) {
    let mut out = BTreeMap::new();
    let mut declared = HashSet::new();
    let map = match v {
        None => return (out, declared),
        Some(Value::Mapping(m)) => m,
        Some(_) => {
            p.push("upstreams", "must be a mapping of name → {url, timeout}");
            return (out, declared);
        }
    };
    for (k, v) in map {
        let Some(name) = k.as_str().map(str::to_string) else {
            p.push(
                "upstreams",
                format!("upstream names are strings, got {k:?}"),
            );
            continue;
        };
        declared.insert(name.clone());
        let at = join("upstreams", &name);
        if !is_identifier(&name, "") {
            p.push(
                at.clone(),
                "an upstream name is letters, digits, `_` or `-`",
            );
        }
        let Some(raw) = typed::<RawUpstream>(Some(v), &at, p) else {
            continue;
        };
        let timeout = raw.timeout.map_or(Duration::from_secs(10), |d| d.0);
        duration_in(p, &join(&at, "timeout"), timeout, MS, HOUR);
        let url = match (&raw.url, &raw.command) {
            (Some(url), None) => url,
            (None, Some(argv)) => {
                if let Some(command) = compile_command(argv, raw.env.as_ref(), &at, &raw, p) {
                    out.insert(
                        name.clone(),
                        Upstream {
                            name,
                            target: UpstreamTarget::Stdio(command),
                            timeout,
                            ca_file: None,
                            client_cert: None,
                            server_name: None,
                        },
                    );
                }
                continue;
            }
            (Some(_), Some(_)) => {
                p.push(
                    at.clone(),
                    "give either url (an HTTP server) or command (an MCP server run over stdio), not both",
                );
                continue;
            }
            (None, None) => {
                p.push(
                    at.clone(),
                    "give url (e.g. http://127.0.0.1:9001) or, for an MCP server that speaks stdio, command: [program, args...]",
                );
                continue;
            }
        };
        if raw.env.is_some() {
            p.push(join(&at, "env"), "env is for command upstreams only");
        }
        match check_upstream_url(url) {
            Ok(uri) => {
                let https = uri.scheme_str() == Some("https");
                let tls_fields = raw.ca_file.is_some()
                    || raw.client_cert.is_some()
                    || raw.client_key.is_some()
                    || raw.server_name.is_some();
                if tls_fields && !https {
                    p.push(
                        at.clone(),
                        "caFile, clientCert, clientKey and serverName need an https url",
                    );
                }
                let client_cert = match (&raw.client_cert, &raw.client_key) {
                    (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
                    (None, None) => None,
                    _ => {
                        p.push(at.clone(), "give clientCert and clientKey together");
                        None
                    }
                };
                if https {
                    let client = client_cert
                        .as_ref()
                        .map(|(c, k)| (c.as_path(), k.as_path()));
                    if let Err(e) =
                        crate::tls::client_config(raw.ca_file.as_deref().map(Path::new), client)
                    {
                        p.push(at.clone(), e);
                    }
                }
                if let Some(sn) = &raw.server_name
                    && rustls_pki_types::ServerName::try_from(sn.as_str()).is_err()
                {
                    p.push(join(&at, "serverName"), "not a DNS name or IP address");
                }
                out.insert(
                    name.clone(),
                    Upstream {
                        name,
                        target: UpstreamTarget::Http(uri),
                        timeout,
                        ca_file: raw.ca_file.map(PathBuf::from),
                        client_cert,
                        server_name: raw.server_name,
                    },
                );
            }
            Err(msg) => p.push(join(&at, "url"), msg),
        }
    }
    (out, declared)
}

fn check_upstream_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("`{url}` is not a URL; write e.g. http://127.0.0.1:9001"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("`{url}`: the scheme must be http or https")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("`{url}` has no host"));
    };
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(format!("`{url}`: give host[:port] without user info"));
    }
    if uri.query().is_some() {
        return Err(format!("`{url}`: an upstream URL has no query"));
    }
    if let Err(e) = crate::proxy::canonical::canonical_path(uri.path()) {
        return Err(format!("`{url}`: its path is not canonical: {e}"));
    }
    Ok(uri)
}

/// A stdio MCP server's command line and environment.
fn compile_command(
    argv: &[String],
    env: Option<&BTreeMap<String, String>>,
    at: &str,
    raw: &RawUpstream,
    p: &mut Problems,
) -> Option<StdioCommand> {
    let before = p.len();
    if argv.is_empty() || argv[0].trim().is_empty() {
        p.push(
            join(at, "command"),
            "name the program first, e.g. [python3, -m, my_mcp_server]",
        );
    }
    if argv.len() > 256 || argv.iter().any(|a| a.contains('\0') || a.len() > 4096) {
        p.push(
            join(at, "command"),
            "at most 256 arguments of at most 4096 bytes, without NUL",
        );
    }
    for k in env.map(|e| e.keys()).into_iter().flatten() {
        if k.is_empty() || k.contains(['=', '\0']) {
            p.push(
                format!("{at}.env.{k}"),
                "an environment variable name has no `=` or NUL",
            );
        }
    }
    if raw.ca_file.is_some()
        || raw.client_cert.is_some()
        || raw.client_key.is_some()
        || raw.server_name.is_some()
    {
        p.push(
            at.to_string(),
            "caFile, clientCert, clientKey and serverName are for https upstreams",
        );
    }
    (p.len() == before).then(|| StdioCommand {
        argv: argv.to_vec(),
        env: env.cloned().unwrap_or_default(),
    })
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn compile_routes(
    v: Option<Value>,
    upstreams: &BTreeMap<String, Upstream>,
    declared: &HashSet<String>,
    p: &mut Problems,
) -> RouteTable {
    let mut routes = Vec::new();
    let mut at_of = Vec::new();
    let mut names = HashSet::new();
    for (i, raw) in typed_list::<RawRoute>(v, "routes", p)
        .into_iter()
        .enumerate()
    {
        let at = index("routes", i);
        let Some(raw) = raw else { continue };
        let before = p.len();
        let name = required(
            &raw.name,
            join(&at, "name"),
            "name the route, e.g. get-customer",
            p,
        );
        if let Some(n) = name {
            if !is_identifier(n, "") {
                p.push(
                    join(&at, "name"),
                    "a route name is letters, digits, `_` or `-` (it is a metric label)",
                );
            }
            if !names.insert(n.to_string()) {
                p.push(join(&at, "name"), format!("duplicate route name `{n}`"));
            }
        }
        let method = required(&raw.method, join(&at, "method"), "e.g. GET", p).and_then(|m| {
            if METHODS.contains(&m) {
                Method::from_bytes(m.as_bytes()).ok()
            } else {
                p.push(
                    join(&at, "method"),
                    format!("`{m}` is not one of {}", METHODS.join(", ")),
                );
                None
            }
        });
        let path = required(&raw.path, join(&at, "path"), "e.g. /crm/customers/{id}", p);
        let params = path.and_then(|path| match parse_path_template(path) {
            Ok(params) => Some(params),
            Err(msg) => {
                p.push(join(&at, "path"), msg);
                None
            }
        });
        let upstream = required(
            &raw.upstream,
            join(&at, "upstream"),
            "name one of `upstreams`",
            p,
        );
        if let Some(u) = upstream {
            match upstreams.get(u).map(|x| &x.target) {
                // Declared, but with problems of its own (reported at upstreams.<name>).
                None if declared.contains(u) => {}
                None => {
                    let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                    p.push(
                        join(&at, "upstream"),
                        format!("unknown upstream `{u}`; known: {}", known.join(", ")),
                    );
                }
                Some(UpstreamTarget::Stdio(_)) => p.push(
                    join(&at, "upstream"),
                    format!("upstream `{u}` is a command (a stdio MCP server); routes forward HTTP, so use it from an `mcp` entry"),
                ),
                Some(UpstreamTarget::Http(url)) if !matches!(url.path(), "" | "/") => p.push(
                    join(&at, "upstream"),
                    format!(
                        "upstream `{u}` has a path ({}); a route forwards the request's own path as evaluated, so its upstream is scheme://host:port only",
                        url.path()
                    ),
                ),
                Some(UpstreamTarget::Http(_)) => {}
            }
        }
        let action = required(&raw.action, join(&at, "action"), "e.g. read", p);
        if let Some(a) = action
            && !is_action(a)
        {
            p.push(
                join(&at, "action"),
                "an action is letters, digits, `_`, `-`, `.` or `:`",
            );
        }
        let resource = required(
            &raw.resource,
            join(&at, "resource"),
            "e.g. api://crm/customers/{id}",
            p,
        )
        .and_then(|r| {
            let params = params.as_deref().unwrap_or_default();
            ResourceTemplate::parse(r, params)
                .map_err(|msg| p.push(join(&at, "resource"), msg))
                .ok()
        });
        let rows = match raw.rows.as_ref().map(|r| (r.query.as_deref(), r.fixed)) {
            None => None,
            Some((Some(q), None)) => {
                if q.is_empty()
                    || q.bytes()
                        .any(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
                {
                    p.push(
                        join(&at, "rows.query"),
                        "a query parameter name is letters, digits, `_` or `-`",
                    );
                }
                Some(RowSource::Query(q.to_string()))
            }
            Some((None, Some(n))) => {
                if n > crate::policy::model::MAX_ROWS {
                    p.push(
                        join(&at, "rows.fixed"),
                        format!("must be at most {}", crate::policy::model::MAX_ROWS),
                    );
                }
                Some(RowSource::Fixed(n))
            }
            Some(_) => {
                p.push(
                    join(&at, "rows"),
                    "give exactly one of `query: <parameter>` (the request says how many rows) or `fixed: <n>` (the route returns at most n, e.g. 1 for a single object)",
                );
                None
            }
        };
        let recipients = raw
            .recipients
            .as_ref()
            .map(|r| r.json.clone())
            .unwrap_or_default();
        if raw.recipients.is_some() && recipients.is_empty() {
            p.push(
                join(&at, "recipients.json"),
                "list at least one JSON pointer, e.g. [/to, /cc, /bcc]",
            );
        }
        for (j, pointer) in recipients.iter().enumerate() {
            if !pointer.starts_with('/') || pointer.len() > 256 {
                p.push(
                    format!("{at}.recipients.json[{j}]"),
                    "a JSON pointer starts with `/`, e.g. /to or /message/cc",
                );
            }
        }
        if recipients.len() > 64 {
            p.push(join(&at, "recipients.json"), "at most 64 pointers");
        }
        let mode = match raw.mode.as_deref() {
            None | Some("enforce") => Mode::Enforce,
            Some("monitor") => Mode::Monitor,
            Some(other) => {
                p.push(
                    join(&at, "mode"),
                    format!("`{other}` is not a mode; use `enforce` or `monitor`"),
                );
                Mode::Enforce
            }
        };
        if p.len() > before {
            continue;
        }
        if let (
            Some(name),
            Some(method),
            Some(path),
            Some(params),
            Some(upstream),
            Some(action),
            Some(resource),
        ) = (name, method, path, params, upstream, action, resource)
        {
            routes.push(Route {
                name: name.into(),
                method,
                path: path.to_string(),
                params,
                upstream: upstream.to_string(),
                action: action.into(),
                resource,
                rows,
                recipient_fields: recipients.iter().map(|p| pointer_field(p)).collect(),
                recipients,
                mode,
                sender_constrained: raw.sender_constrained.unwrap_or(false),
            });
            at_of.push(at);
        }
    }
    match RouteTable::build(routes) {
        Ok(table) => table,
        Err((i, msg)) => {
            p.push(join(&at_of[i], "path"), msg);
            RouteTable::default()
        }
    }
}

/// The last segment of a JSON pointer, unescaped: `/message/cc` → `cc`.
fn pointer_field(pointer: &str) -> String {
    pointer
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .replace("~1", "/")
        .replace("~0", "~")
}

fn compile_policies(v: Option<Value>, tenant: &str, p: &mut Problems) -> Vec<Policy> {
    let mut policies: Vec<Policy> = Vec::new();
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for (i, raw) in typed_list::<PolicyInput>(v, "policies", p)
        .into_iter()
        .enumerate()
    {
        let at = index("policies", i);
        let Some(raw) = raw else { continue };
        let id = id_from_name(raw.name.as_deref().unwrap_or_default());
        let Some(policy) = validate_policy(&raw, tenant, &id, PolicySource::Config, &at, p) else {
            continue;
        };
        if !names.insert(policy.name.clone()) {
            p.push(
                join(&at, "name"),
                format!("duplicate policy name `{}`", policy.name),
            );
        }
        if !ids.insert(policy.id.clone()) {
            p.push(
                join(&at, "id"),
                format!(
                    "duplicate policy id `{}`; give one of them an explicit `id`",
                    policy.id
                ),
            );
        }
        policies.push(policy);
    }
    policies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        Config::parse(yaml, "test")
            .err()
            .map(|p| p.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn proxy_workers_default_to_the_cpus_and_are_bounded() {
        let c = Config::parse("", "test").unwrap();
        assert_eq!(c.listen.workers, default_workers());
        let c = Config::parse("listen: { workers: 3 }", "test").unwrap();
        assert_eq!(c.listen.workers, 3);
        for bad in ["0", "257"] {
            let p = problems(&format!("listen: {{ workers: {bad} }}"));
            assert!(
                p.iter()
                    .any(|l| l.starts_with("listen.workers: ") && l.contains("1 to 256")),
                "{p:?}"
            );
        }
    }

    #[test]
    fn empty_config_gets_defaults() {
        let c = Config::parse("", "test").unwrap();
        assert_eq!(c.listen.proxy.to_string(), "127.0.0.1:8080");
        assert_eq!(&*c.tenant, "default-tenant");
        assert_eq!(c.tokens.max_ttl, Duration::from_secs(86400));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let got = problems(
            r#"
listen: { proxy: "nowhere", api: 127.0.0.1:8081 }
tokens: { defaultTtl: 2d, maxTtl: 1h, clockSkew: "soon" }
upstreams:
  crm: { url: "ftp://x" }
routes:
  - { name: a, method: GET, path: "/crm/{id}", upstream: crm, action: read, resource: "api://crm/{cid}" }
  - { name: a, method: FETCH, path: crm, upstream: nope, action: read, resource: "api://x" }
policies:
  - { name: p, actions: [read], resources: ["api://x/*"], effect: allow, constraints: { maxRow: 5 } }
  - { name: p, actions: [read], resources: ["api://x/[a"], effect: allow }
bogus: 1
"#,
        );
        let want = [
            "bogus: unknown section",
            "listen.proxy: `nowhere` is not an address",
            "tokens.clockSkew: invalid duration `soon`",
            "upstreams.crm.url: `ftp://x`: the scheme must be http or https",
            "routes[0].resource: unknown placeholder {cid}; the path has {id}",
            "routes[1].name: duplicate route name `a`",
            "routes[1].method: `FETCH` is not one of",
            "routes[1].path: must start with `/`",
            "routes[1].upstream: unknown upstream `nope`",
            "policies[0].constraints.maxRow: unknown constraint; known: maxRows, allowedDomains, readOnly",
            "policies[1].resources[0]: not a valid glob",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let got = problems(
            "routes:\n  - { name: a, method: GET, path: /a, upstream: u, action: read, resource: r, limit: 3 }\n",
        );
        assert!(
            got.iter()
                .any(|g| g.starts_with("routes[0].limit: unknown field `limit`")),
            "{got:?}"
        );
        let got = problems("tokens: { maxTTL: 1h }\n");
        assert!(
            got.iter()
                .any(|g| g.starts_with("tokens.maxTTL: unknown field `maxTTL`")),
            "{got:?}"
        );
    }

    #[test]
    fn one_typo_does_not_hide_the_other_problems_of_its_section() {
        let got = problems(
            "tokens: { maxTTL: 1h, clockSkw: 5s, cacheCapacity: lots }\nlimits: { maxBody: 1 }\n",
        );
        for want in [
            "tokens.maxTTL: unknown field `maxTTL`",
            "tokens.clockSkw: unknown field `clockSkw`",
            "tokens.cacheCapacity: invalid type",
            "limits.maxBody: unknown field `maxBody`",
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "missing {want:?} in {got:#?}"
            );
        }
    }

    #[test]
    fn duplicate_policy_names_and_route_conflicts() {
        let got = problems(
            r#"
upstreams: { u: { url: "http://127.0.0.1:1" } }
routes:
  - { name: a, method: GET, path: "/x/{id}", upstream: u, action: read, resource: "api://x/{id}" }
  - { name: b, method: GET, path: "/x/{other}", upstream: u, action: read, resource: "api://x/{other}" }
policies:
  - { name: p, actions: [read], resources: ["*"], effect: allow }
  - { name: p, actions: [read], resources: ["*"], effect: allow }
"#,
        );
        assert!(
            got.iter()
                .any(|g| g.starts_with("routes[1].path: GET /x/{other} conflicts")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|g| g.starts_with("policies[1].name: duplicate policy name")),
            "{got:?}"
        );
    }

    #[test]
    fn several_tenants_need_the_tenant_in_the_certificate_identity() {
        let yaml = |template: &str| {
            format!(
                "apiKeys:\n  - {{ name: a, sha256: {h} }}\n  - {{ name: b, sha256: {h}, tenant: other }}\ntls:\n  proxy: {{ cert: c.pem, key: k.pem, clientCa: ca.pem, identity: {{ template: \"{template}\" }} }}\n",
                h = "ab".repeat(32)
            )
        };
        let got = problems(&yaml("spiffe://x/agent/{agent}"));
        assert!(
            got.iter()
                .any(|g| g.starts_with("tls.proxy.identity.template: several tenants")),
            "{got:?}"
        );
        let got = problems(&yaml("spiffe://x/tenant/{tenant}/agent/{agent}"));
        assert!(!got.iter().any(|g| g.contains("identity")), "{got:?}");
    }

    #[test]
    fn api_keys_need_exactly_one_source() {
        let got = problems(
            "apiKeys:\n  - { name: a }\n  - { name: b, fromEnv: X, sha256: abc }\n  - { name: c, sha256: zz }\n",
        );
        assert_eq!(got.len(), 3, "{got:?}");
    }
}
