//! The `actgate` command line: parse arguments, load the config, run. Exit codes: 0 success
//! (or allowed), 1 denied / check failed, 2 usage or config error.

#![forbid(unsafe_code)]

/// mimalloc instead of glibc malloc: the proxy allocates per request on the async workers and
/// the audit writer frees on its own thread; glibc's arenas spent 11% of the CPU there (perf),
/// mimalloc's per-thread heaps do not. Measured in BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use actgate::config::{Config, ConfigError};
use actgate::policy::Query;
use actgate::policy::context::ContextFacts;
use actgate::snapshot::CheckReport;
use actgate::store::sqlite::SqliteStore;
use actgate::store::{AgentStatus, Store, TokenRecord};
use actgate::telemetry::{LogFormat, init_tracing};
use actgate::token::keys::KeyState;
use actgate::token::{KeySet, Tokens, now_unix, rfc3339};

#[derive(Parser)]
#[command(
    name = "actgate",
    version,
    about = "Capability-token gateway for AI agents"
)]
struct Cli {
    /// Config file (default: config/actgate.yaml if present, else the embedded default).
    #[arg(long, global = true, env = "ACTGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy, API and admin listeners until SIGTERM or SIGINT.
    Serve {
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Start actgate with demo upstreams, register an agent, a policy and a token, and send
    /// allowed and denied calls through the proxy.
    Demo {
        /// Where the demo keeps its store, keys and audit trail.
        #[arg(long, default_value = "./demo-data")]
        data_dir: PathBuf,
        /// Keep the gateway running after the demo (Ctrl-C to stop).
        #[arg(long)]
        keep_running: bool,
        /// Keep what an earlier run left in the data directory (by default each run starts
        /// fresh).
        #[arg(long)]
        keep: bool,
    },
    /// Issue a capability token for a registered agent (prints the token on stdout).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage the signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Work with the config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script: `actgate completions bash > /etc/bash_completion.d/actgate`
    /// (or zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `actgate man > actgate.1 && man ./actgate.1`.
    Man,
    /// Apply the PostgreSQL store's pending schema migrations (store.postgres) and exit: run
    /// it as a Job before a rollout, or let each replica do it at start (the default).
    Migrate,
    /// Decide one request for an agent and explain each policy of its tenant: from the
    /// config and the store in dataDir, or from a running gateway with --api. Exit 0 allowed,
    /// 1 denied, 2 bad input.
    Check {
        /// Ask a running gateway (its REST API, e.g. http://127.0.0.1:8081) instead of
        /// reading the config and dataDir; the key comes from ACTGATE_API_KEY or --api-key-file.
        #[arg(long)]
        api: Option<String>,
        /// File holding the API key for --api (role auditor or admin).
        #[arg(long)]
        api_key_file: Option<PathBuf>,
        /// Agent id.
        #[arg(long)]
        agent: String,
        /// Action, e.g. read.
        #[arg(long)]
        action: String,
        /// Resource id, e.g. api://crm/customers/42.
        #[arg(long)]
        resource: String,
        /// Context as JSON, e.g. '{"rows": 500}' or '{"to": ["a@yourcompany.com"]}'.
        #[arg(long)]
        context: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token.
    Issue {
        /// Agent id (must be registered and active).
        #[arg(long)]
        agent: String,
        /// Lifetime, e.g. 1h (default: tokens.defaultTtl; at most tokens.maxTtl).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        /// Narrow the token to these policy ids (repeatable).
        #[arg(long = "policy")]
        policies: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of every segment and every checkpoint's signature; exit 0 when
    /// intact, 1 naming the first bad record (file, line, seq).
    Verify {
        /// Also check checkpoints exported earlier (`actgate audit checkpoint > cp.json`).
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// Check every replica's chain as copied to the shared store (store.postgres), from
        /// the database alone, instead of this machine's log.
        #[arg(long)]
        from_store: bool,
        /// With --from-store: the directory of public keys the chains' checkpoints are
        /// checked against — keys from outside the database (default: tokens.keysDir).
        #[arg(long, requires = "from_store")]
        keys_dir: Option<PathBuf>,
    },
    /// Print a signed checkpoint of the log's current head, to keep somewhere else.
    Checkpoint,
    /// Print the last records as JSON lines; with --follow, keep printing new ones.
    Tail {
        /// How many records to print first.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Keep printing records as they are written.
        #[arg(short, long)]
        follow: bool,
    },
    /// Rebuild the store's audit index (GET /v1/audit) from the log. Stop the gateway first.
    Reindex,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List the signing keys: kid, state (active, verify-only, retired), when made, and how
    /// many issued tokens are still valid under each.
    List,
    /// Generate a new signing key and make it active; tokens signed by older keys keep
    /// verifying until they expire (or the key is retired). A running gateway picks the new
    /// key up within seconds.
    Rotate,
    /// Retire a key: tokens it signed are refused by a running gateway within seconds, and
    /// its secret half is deleted. The active key cannot be retired: rotate first.
    Retire {
        /// The key id (`actgate keys list` shows them).
        kid: String,
    },
    /// Write the key set as one file (0600): the active key's secret half and the public
    /// halves of the others, with their states. A key directory holding that file (a
    /// Kubernetes Secret generated from it, mounted as tokens.keysDir) is read-only: rotate
    /// and retire here, then export again.
    Export {
        /// The file to write (`signing-keys` is the name a gateway looks for in its key
        /// directory).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file: print OK, or every problem with its path.
    Validate {
        /// The file (same as --config).
        file: Option<PathBuf>,
        /// Treat warnings (a policy no route can reach, a constraint a route cannot carry, an
        /// unknown agent, actions differing only in case) as errors: exit 2.
        #[arg(long)]
        strict: bool,
    },
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() -> ExitCode {
    // Not dumpable: another process of this user (a stdio MCP server actgate runs, say)
    // cannot read this one's memory or environment (/proc/<pid>/environ holds API keys).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("warning: prctl(PR_SET_DUMPABLE, 0) failed: {e}");
    }
    let cli = Cli::parse();
    let config_path = cli.config;
    let load = || Config::load_default(config_path.as_deref());
    match cli.command {
        Command::Serve { log_format } => {
            if let Err(e) = init_tracing(log_format) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            let config = match load() {
                Ok(c) => c,
                Err(e) => return config_failure(e),
            };
            runtime().block_on(serve(config, log_format))
        }
        Command::Demo {
            data_dir,
            keep_running,
            keep,
        } => {
            if let Err(e) = init_tracing(LogFormat::Text) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            match runtime().block_on(actgate::demo::run(data_dir, keep_running, keep)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    agent,
                    ttl,
                    policies,
                },
        } => {
            let config = match load() {
                Ok(c) => c,
                Err(e) => return config_failure(e),
            };
            runtime().block_on(issue_token(config, agent, ttl.map(Into::into), policies))
        }
        Command::Audit { command } => match load() {
            Ok(config) => audit_command(config, command),
            Err(e) => config_failure(e),
        },
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "actgate", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Migrate => match load() {
            Ok(config) => runtime().block_on(migrate(&config)),
            Err(e) => config_failure(e),
        },
        Command::Keys { command } => match load() {
            Ok(config) => keys_command(&config, command),
            Err(e) => config_failure(e),
        },
        Command::Config {
            command: ConfigCommand::Validate { file, strict },
        } => match Config::load_default(file.as_deref().or(config_path.as_deref())) {
            Ok(c) => {
                // Agents made through the API count as defined: read them from the store
                // when there is one (never created here).
                let stored: Vec<String> =
                    if c.store.postgres.is_none() && c.data_dir.join("actgate.db").exists() {
                        runtime().block_on(async {
                            match actgate::store::open_configured(&c).await {
                                Ok(store) => store
                                    .all_agents()
                                    .await
                                    .map(|a| a.into_iter().map(|a| a.id).collect())
                                    .unwrap_or_default(),
                                Err(_) => Vec::new(),
                            }
                        })
                    } else {
                        Vec::new()
                    };
                let warnings = actgate::config::lint::warnings(&c, &stored);
                println!(
                    "OK: {} ({} routes, {} policies, {} upstreams){}",
                    c.origin,
                    c.routes.routes().len(),
                    c.policies.len(),
                    c.upstreams.len(),
                    match warnings.len() {
                        0 => String::new(),
                        1 => ", 1 warning".into(),
                        n => format!(", {n} warnings"),
                    }
                );
                for w in &warnings {
                    println!("  warning: {w}");
                }
                if strict && !warnings.is_empty() {
                    eprintln!(
                        "error: --strict: {} warning(s) count as errors",
                        warnings.len()
                    );
                    return ExitCode::from(2);
                }
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(e),
        },
        Command::Check {
            api,
            api_key_file,
            agent,
            action,
            resource,
            context,
        } => {
            let request = CheckRequest {
                agent,
                action,
                resource,
                context,
            };
            match api {
                Some(url) => runtime().block_on(check_remote(&url, api_key_file, &request)),
                None => match load() {
                    Ok(config) => runtime().block_on(check_local(config, &request)),
                    Err(e) => config_failure(e),
                },
            }
        }
    }
}

fn config_failure(e: ConfigError) -> ExitCode {
    match e {
        ConfigError::Invalid(problems) => {
            eprintln!("config is invalid ({} problems):", problems.len());
            for p in problems.iter() {
                eprintln!("  {p}");
            }
        }
        other => eprintln!("error: {other}"),
    }
    ExitCode::from(2)
}

fn keys_command(config: &Config, command: KeysCommand) -> ExitCode {
    let dir = config.keys_dir();
    match command {
        KeysCommand::Rotate => match KeySet::rotate(&dir) {
            Ok(kid) => {
                println!(
                    "new signing key {kid} is active; older keys still verify (retire one with `actgate keys retire <kid>`)"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        KeysCommand::Retire { kid } => match KeySet::retire(&dir, &kid) {
            Ok(()) => {
                println!(
                    "key {kid} is retired: a running gateway refuses the tokens it signed within seconds; its secret key is deleted"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        KeysCommand::Export { out } => match actgate::token::keys::export(&dir, &out) {
            Ok(n) => {
                println!(
                    "wrote {} ({n} key{} from {}); it holds the active secret key: keep it out of git",
                    out.display(),
                    if n == 1 { "" } else { "s" },
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        KeysCommand::List => {
            let keys = match KeySet::list(&dir) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            // Token counts come from the store, when there is one.
            let counts: std::collections::HashMap<String, u64> =
                if config.store.postgres.is_some() || config.data_dir.join("actgate.db").exists() {
                    runtime().block_on(async {
                        match actgate::store::open_configured(config).await {
                            Ok(store) => store
                                .live_tokens_by_kid(now_unix())
                                .await
                                .unwrap_or_default()
                                .into_iter()
                                .collect(),
                            Err(_) => Default::default(),
                        }
                    })
                } else {
                    Default::default()
                };
            let when = |t: Option<i64>| t.map(rfc3339).unwrap_or_else(|| "-".into());
            println!(
                "{:<18}  {:<11}  {:<20}  valid tokens",
                "kid", "state", "created"
            );
            for k in keys {
                let n = counts.get(&k.kid).copied().unwrap_or(0);
                let note = match k.state {
                    KeyState::Retired => format!("{n} (refused; retired {})", when(k.retired)),
                    _ => n.to_string(),
                };
                println!(
                    "{:<18}  {:<11}  {:<20}  {note}",
                    k.kid,
                    k.state.as_str(),
                    when(k.created)
                );
            }
            ExitCode::SUCCESS
        }
    }
}

/// What `actgate check` asks.
struct CheckRequest {
    agent: String,
    action: String,
    resource: String,
    context: Option<String>,
}

impl CheckRequest {
    /// The context as a JSON object, or the exit code of a bad one (2, after saying why).
    fn context(&self) -> Result<serde_json::Map<String, serde_json::Value>, ExitCode> {
        match self
            .context
            .as_deref()
            .map(serde_json::from_str::<serde_json::Value>)
        {
            None => Ok(serde_json::Map::new()),
            Some(Ok(serde_json::Value::Object(map))) => Ok(map),
            Some(Ok(_)) => {
                eprintln!("error: --context must be a JSON object, e.g. '{{\"rows\": 10}}'");
                Err(ExitCode::from(2))
            }
            Some(Err(e)) => {
                eprintln!("error: --context is not JSON: {e}");
                Err(ExitCode::from(2))
            }
        }
    }
}

/// `check` against the config and the store in its dataDir: the same snapshot build the
/// gateway uses, so config and API-made policies and agents count alike.
async fn check_local(config: Config, req: &CheckRequest) -> ExitCode {
    let context = match req.context() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let facts = match ContextFacts::from_json(&context) {
        Ok(f) => f,
        Err(msg) => {
            eprintln!("error: --context: {msg}");
            return ExitCode::from(2);
        }
    };
    let db = config.data_dir.join("actgate.db");
    let store = if config.store.postgres.is_some() || db.exists() {
        actgate::store::open_configured(&config).await
    } else {
        eprintln!(
            "note: no store at {} yet: deciding from the config's policies and agents only",
            db.display()
        );
        SqliteStore::in_memory().map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn Store>)
    };
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let tenant = config.tenant.clone();
    let origin = config.origin.clone();
    let snapshot = match actgate::gateway::build_snapshot(
        std::sync::Arc::new(config),
        &*store,
        None,
        actgate::gateway::Refresh::Policies,
        0,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let query = Query {
        action: &req.action,
        resource: &req.resource,
        facts: facts.facts(),
    };
    let report = snapshot.check(&tenant, &req.agent, None, &query);
    print_check(&report, &format!("{origin} and {}", db.display()))
}

/// `check` asked of a running gateway (`POST /v1/check`): its live policies and agents.
async fn check_remote(url: &str, key_file: Option<PathBuf>, req: &CheckRequest) -> ExitCode {
    let context = match req.context() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let key = match key_file {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(k) => k.trim().to_string(),
            Err(e) => {
                eprintln!("error: --api-key-file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => match std::env::var("ACTGATE_API_KEY") {
            Ok(k) if !k.is_empty() => k,
            _ => {
                eprintln!(
                    "error: --api needs an API key (role auditor or admin): set ACTGATE_API_KEY or pass --api-key-file"
                );
                return ExitCode::from(2);
            }
        },
    };
    let body = serde_json::json!({
        "agentId": req.agent,
        "action": req.action,
        "resourceId": req.resource,
        "context": context,
    });
    let endpoint = format!("{}/v1/check", url.trim_end_matches('/'));
    let (status, answer) = match actgate::client::post_json(&endpoint, &key, &body).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {endpoint}: {e}");
            return ExitCode::from(2);
        }
    };
    if status != 200 {
        eprintln!(
            "error: {endpoint} answered {status}: {}",
            answer["message"].as_str().unwrap_or("(no message)")
        );
        return ExitCode::from(2);
    }
    match serde_json::from_value::<CheckReport>(answer) {
        Ok(report) => print_check(&report, &endpoint),
        Err(e) => {
            eprintln!("error: {endpoint}: unexpected answer: {e}");
            ExitCode::from(2)
        }
    }
}

fn print_check(r: &CheckReport, from: &str) -> ExitCode {
    println!("decision: {}", r.decision);
    println!("reason:   {}", r.reason);
    match &r.policy_id {
        Some(id) => {
            let name = r
                .policies
                .iter()
                .find(|p| p.id == *id)
                .map(|p| p.name.as_str())
                .unwrap_or_default();
            println!("policy:   {id} ({name})");
        }
        None => println!("policy:   -"),
    }
    println!("message:  {}", r.message);
    if r.decision == "allowed" && r.constraints.as_object().is_some_and(|o| !o.is_empty()) {
        println!("obligations: {}", r.constraints);
    }
    println!();
    println!(
        "policies of tenant {} (agent {}, {}; from {from}; token checks are not part of `check`):",
        r.tenant_id, r.agent_id, r.agent_status
    );
    if r.policies.is_empty() {
        println!("  (none)");
    }
    let width = r.policies.iter().map(|l| l.id.len()).max().unwrap_or(0);
    for line in &r.policies {
        println!(
            "  {:width$}  {:6}  {:6}  {}  [{}]",
            line.id, line.effect, line.source, line.why, line.name,
        );
    }
    if r.decision == "allowed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn serve(config: Config, log_format: LogFormat) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let origin = config.origin.clone();
    // The handlers first: a SIGTERM that comes as soon as the listeners are announced (a
    // rollout, a test) must drain, not kill.
    let signals = Signals {
        term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
        int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        hup: signal(SignalKind::hangup()).expect("SIGHUP handler"),
    };
    let running = match actgate::server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            // Once: as a JSON log line for log pipelines, else as the plain error (a text log
            // line would say the same thing twice on the same terminal).
            match log_format {
                LogFormat::Json => tracing::error!(error = %e, "actgate cannot start"),
                LogFormat::Text => eprintln!("error: {e}"),
            }
            // A weak key is a config error (2); anything else kept it from starting (1).
            let code = match e {
                actgate::gateway::StartError::WeakKey(_) => 2,
                _ => 1,
            };
            return ExitCode::from(code);
        }
    };
    tracing::info!(config = %origin, "ready; SIGHUP reloads the config, Ctrl-C or SIGTERM stops");
    wait_for_signal(&running, signals).await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// Waits for SIGTERM or SIGINT; SIGHUP asks for a reload and keeps waiting.
async fn wait_for_signal(running: &actgate::server::Running, mut s: Signals) {
    loop {
        tokio::select! {
            _ = s.term.recv() => return,
            _ = s.int.recv() => return,
            _ = s.hup.recv() => {
                tracing::info!("SIGHUP: checking the config and TLS files");
                running.reload();
            }
        }
    }
}

async fn issue_token(
    config: Config,
    agent: String,
    ttl: Option<std::time::Duration>,
    policies: Vec<String>,
) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("error: {msg}");
        ExitCode::from(1)
    };
    let ttl = ttl.unwrap_or(config.tokens.default_ttl);
    if ttl > config.tokens.max_ttl || ttl.as_secs() == 0 {
        return fail(format!(
            "--ttl must be between 1s and tokens.maxTtl ({})",
            humantime::format_duration(config.tokens.max_ttl)
        ));
    }
    let keys = match KeySet::load_or_create(&config.keys_dir()) {
        Ok(k) => k,
        Err(e) => return fail(e.to_string()),
    };
    let store = match actgate::store::open_configured(&config).await {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let from_config = config
        .agents
        .iter()
        .find(|a| a.id == agent && *a.tenant == *config.tenant)
        .map(actgate::store::Agent::from_config);
    let found = match from_config {
        Some(a) => Ok(Some(a)),
        None => store.agent(&config.tenant, &agent).await,
    };
    let record = match found {
        Ok(Some(a)) => a,
        Ok(None) => {
            return fail(format!(
                "agent {agent} is not registered in tenant {}; create it with POST /v1/agents or list it under `agents:` in the config",
                config.tenant
            ));
        }
        Err(e) => return fail(e.to_string()),
    };
    if record.status != AgentStatus::Active {
        return fail(format!("agent {agent} is revoked"));
    }
    let tokens = Tokens::new(keys, 0, config.tokens.clock_skew, 1);
    let policy_ids = (!policies.is_empty()).then_some(policies);
    let (token, claims) = match tokens.issue(&agent, &config.tenant, ttl, policy_ids, now_unix()) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let rec = TokenRecord::issued(&claims);
    if let Err(e) = store.insert_token(&rec).await {
        return fail(e.to_string());
    }
    eprintln!(
        "token {} for {} (tenant {}), expires {}",
        claims.jti,
        claims.agent,
        claims.tenant,
        rfc3339(claims.expires_at)
    );
    println!("{token}");
    ExitCode::SUCCESS
}

/// Connects to the shared store (without migrating unless `migrate`).
async fn connect_shared(
    config: &Config,
    migrate: bool,
) -> Result<actgate::store::postgres::PgStore, ExitCode> {
    let Some(pg) = &config.store.postgres else {
        eprintln!(
            "error: {} has no store.postgres: this command works on the PostgreSQL store several replicas share",
            config.origin
        );
        return Err(ExitCode::from(2));
    };
    let url = pg.url.resolve().map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    let settings = actgate::store::postgres::PgSettings {
        url,
        max_connections: 2,
        ca_file: pg.ca_file.clone(),
    };
    actgate::store::postgres::PgStore::connect(&settings, migrate)
        .await
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(1)
        })
}

async fn migrate(config: &Config) -> ExitCode {
    match connect_shared(config, true).await {
        Ok(store) => {
            println!(
                "OK: {} is at schema version {}",
                store.target,
                actgate::store::postgres::MIGRATIONS.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `audit verify --from-store`: each replica's chain in the shared table, from the database
/// alone: seqs from 1 without gaps, each `prevHash` the hash of the line before, each hash
/// that of its line, each line a record with that seq and prevHash.
async fn verify_store(config: &Config, keys_dir: Option<PathBuf>) -> ExitCode {
    use actgate::audit::log;
    let store = match connect_shared(config, false).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Checkpoints, checked against public keys from outside the database.
    let keys_dir = keys_dir.unwrap_or_else(|| config.keys_dir());
    let keys = match actgate::token::keys::public_keys(&keys_dir) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: the keys that signed the checkpoints: {e} (pass --keys-dir)");
            return ExitCode::from(2);
        }
    };
    let checkpoints = match store.audit_checkpoints().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: reading the checkpoints: {e}");
            return ExitCode::from(2);
        }
    };
    // chain → (seq → signed hash); a bad signature or an unknown key is a problem of its own.
    let mut signed: std::collections::BTreeMap<String, std::collections::BTreeMap<u64, String>> =
        Default::default();
    let mut cp_problems: std::collections::BTreeMap<String, String> = Default::default();
    let mut unknown_keys: std::collections::BTreeSet<String> = Default::default();
    for (chain, cp) in &checkpoints {
        match keys.get(&cp.kid) {
            None => {
                unknown_keys.insert(cp.kid.clone());
            }
            Some(pk) if !cp.verify(pk) => {
                cp_problems.entry(chain.clone()).or_insert_with(|| {
                    format!("the checkpoint at seq {} has a bad signature", cp.seq)
                });
            }
            Some(_) => {
                signed
                    .entry(chain.clone())
                    .or_default()
                    .insert(cp.seq, cp.hash.clone());
            }
        }
    }
    struct Chain {
        records: u64,
        next: u64,
        prev: String,
        broken: Option<String>,
    }
    let mut chains: std::collections::BTreeMap<String, Chain> = Default::default();
    let genesis = hex::encode(log::GENESIS);
    let walked = store
        .audit_chains(&mut |name, row| {
            let c = chains.entry(name.to_string()).or_insert_with(|| Chain {
                records: 0,
                next: 1,
                prev: genesis.clone(),
                broken: None,
            });
            if c.broken.is_some() {
                return;
            }
            let seq = row.seq;
            let record = serde_json::from_str::<log::Record>(&row.line).ok();
            let hash = hex::encode(log::line_hash(row.line.as_bytes()));
            let signed_hash = signed.get(name).and_then(|m| m.get(&seq));
            let problem = if signed_hash.is_some_and(|h| *h != hash) {
                Some(format!(
                    "seq {seq}: its hash is not the one the checkpoint signed: the chain was rewritten"
                ))
            } else if seq != c.next {
                Some(format!(
                    "seq {seq} follows seq {}: records {}..{seq} are missing",
                    c.next - 1,
                    c.next
                ))
            } else if row.prev_hash != c.prev {
                Some(format!("seq {seq}: prevHash is not the hash of seq {}", c.next - 1))
            } else if hash != row.hash {
                Some(format!("seq {seq}: the line was changed (its hash does not match)"))
            } else if seq == 1 && !name.ends_with(&format!("/{}", &hash[..8])) {
                Some("seq 1 is not the record the chain is named after".to_string())
            } else {
                match record {
                    None => Some(format!("seq {seq}: the line is not an audit record")),
                    Some(r) => {
                        let derived = actgate::store::postgres::AuditRow::from_record(r, row.line.as_bytes());
                        (derived != *row).then(|| {
                            format!(
                                "seq {seq}: the row's columns (tenant, kind, decision, …) differ from its line: edited in the database"
                            )
                        })
                    }
                }
            };
            match problem {
                Some(p) => c.broken = Some(p),
                None => {
                    c.records += 1;
                    c.next = seq + 1;
                    c.prev = hash;
                }
            }
        })
        .await;
    if let Err(e) = walked {
        eprintln!("error: reading the audit table: {e}");
        return ExitCode::from(2);
    }
    if chains.is_empty() {
        println!("OK: no audit records in {} yet", store.target);
        return ExitCode::SUCCESS;
    }
    let mut tampered = false;
    // Checkpoints beyond a chain's last row: records were cut off its end; and chains whose
    // checkpoints exist but whose rows are all gone.
    for (name, seqs) in &signed {
        let last = chains.get(name).map_or(0, |c| c.next - 1);
        if let Some((&seq, _)) = seqs.range(last + 1..).next() {
            cp_problems.entry(name.clone()).or_insert_with(|| {
                format!("a checkpoint signed seq {seq}, but the table ends at seq {last}: records were removed")
            });
        }
    }
    for (name, problem) in &cp_problems {
        if chains.get(name).is_none_or(|c| c.broken.is_none()) {
            tampered = true;
            println!("TAMPERED: {name}: {problem}");
        }
    }
    for kid in &unknown_keys {
        println!(
            "warning: checkpoints signed by key {kid}, which is not in {}: not checked (pass --keys-dir with every replica's public keys)",
            keys_dir.display()
        );
    }
    for (name, c) in &chains {
        if cp_problems.contains_key(name) && c.broken.is_none() {
            continue;
        }
        let covered = signed
            .get(name)
            .and_then(|m| m.range(..c.next).next_back().map(|(s, _)| *s))
            .unwrap_or(0);
        if c.broken.is_none() && covered < c.next - 1 {
            println!(
                "note: {name}: records {}..={} are after its last signed checkpoint{}",
                covered + 1,
                c.next - 1,
                if covered == 0 { " (none yet)" } else { "" }
            );
        }
        match &c.broken {
            None => println!(
                "OK: {name}: {} records, hash chain and columns intact, {} signed checkpoints matched; head seq {} hash {}",
                c.records,
                signed.get(name).map_or(0, |m| m.range(..c.next).count()),
                c.next - 1,
                c.prev
            ),
            Some(p) => {
                tampered = true;
                println!("TAMPERED: {name}: {p}");
            }
        }
    }
    if tampered {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn audit_command(config: Config, command: AuditCommand) -> ExitCode {
    use actgate::audit::log;
    let dir = config.data_dir.join("audit");
    let keys_dir = config.keys_dir();
    match command {
        AuditCommand::Verify {
            from_store: true,
            keys_dir,
            ..
        } => runtime().block_on(verify_store(&config, keys_dir)),
        AuditCommand::Verify { checkpoint, .. } => {
            let keys = match actgate::token::keys::public_keys(&keys_dir) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut extra = Vec::new();
            for path in checkpoint {
                match std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        serde_json::from_str::<log::Checkpoint>(&t).map_err(|e| e.to_string())
                    }) {
                    Ok(cp) => extra.push(cp),
                    Err(e) => {
                        eprintln!("error: {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                }
            }
            // The index is what `serve` compares the log with at start: an index ahead of the
            // log means records were cut from the log, and serve refuses to start on it.
            let index = match actgate::audit::index::head(&config.data_dir) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("error: reading the audit index: {e}");
                    return ExitCode::from(2);
                }
            };
            if !dir.exists() {
                return match index {
                    Some(n) if n > 0 => {
                        println!(
                            "TAMPERED: {}: the audit log is gone, but the index ({}) records {n} events",
                            dir.display(),
                            actgate::audit::index::index_dir(&config.data_dir).display()
                        );
                        ExitCode::from(1)
                    }
                    _ => {
                        eprintln!(
                            "no audit log at {}: nothing to verify yet (the gateway creates it when it first starts)",
                            dir.display()
                        );
                        ExitCode::from(2)
                    }
                };
            }
            match log::verify(&dir, &|kid| keys.get(kid).cloned(), &extra) {
                Ok(v) if index.is_some_and(|n| n > v.last_seq) => {
                    let n = index.unwrap_or_default();
                    println!(
                        "TAMPERED: {}: the log ends at seq {} but the audit index ({}) has records up to seq {n}: seq {}..={n} are missing from the log (deleted or truncated). `serve` refuses to start on this log; restore it, or run `actgate audit reindex` to accept the loss",
                        dir.display(),
                        v.last_seq,
                        actgate::audit::index::index_dir(&config.data_dir).display(),
                        v.last_seq + 1
                    );
                    ExitCode::from(1)
                }
                Ok(v) => {
                    println!(
                        "OK: {} records in {} segments, hash chain intact, {} checkpoints verified; head seq {} hash {}",
                        v.records, v.segments, v.checkpoints, v.last_seq, v.head
                    );
                    if let Some(n) = index.filter(|n| *n < v.last_seq) {
                        println!(
                            "note: the audit index lags the log ({n} < {}); the gateway catches it up when it starts",
                            v.last_seq
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(broken) => {
                    println!("TAMPERED: {broken}");
                    ExitCode::from(1)
                }
            }
        }
        AuditCommand::Checkpoint => {
            let keys = match KeySet::load(&keys_dir) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            let Some(key) = keys.signing.as_ref() else {
                eprintln!("error: no signing key");
                return ExitCode::from(1);
            };
            match log::head(&dir) {
                Ok(Some((seq, hash))) => {
                    match log::Checkpoint::sign(
                        seq,
                        &hex::encode(hash),
                        &key.kid,
                        key.secret_bytes(),
                    ) {
                        Some(cp) => {
                            println!("{}", serde_json::to_string(&cp).unwrap_or_default());
                            ExitCode::SUCCESS
                        }
                        None => {
                            eprintln!("error: signing failed");
                            ExitCode::from(1)
                        }
                    }
                }
                Ok(None) => {
                    eprintln!("the audit log is empty");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        AuditCommand::Tail { lines, follow, .. } => tail(&dir, lines, follow),
        AuditCommand::Reindex => {
            let head = match log::head(&dir) {
                Ok(h) => h.map_or(0, |(seq, _)| seq),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            let index = match actgate::audit::index::AuditIndex::open(&config.data_dir, &dir) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            if let Err(e) = index.clear() {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
            let started = std::time::Instant::now();
            let mut last = started;
            let replayed = index.catch_up(head, &mut |done, of| {
                if last.elapsed() >= std::time::Duration::from_secs(2) {
                    last = std::time::Instant::now();
                    eprintln!("reindexing: {done} of {of} records");
                }
            });
            match replayed {
                Ok(n) => {
                    println!(
                        "reindexed {n} audit records from {} in {:.1}s",
                        dir.display(),
                        started.elapsed().as_secs_f64()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn tail(dir: &std::path::Path, lines: usize, follow: bool) -> ExitCode {
    use actgate::audit::log;
    if !dir.exists() {
        eprintln!(
            "no audit log at {} yet: the gateway creates it when it first starts{}",
            dir.display(),
            if follow {
                "; waiting for it"
            } else {
                " (check dataDir in the config)"
            }
        );
        if !follow {
            return ExitCode::from(2);
        }
        while !dir.exists() {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    let mut last: Vec<String> = Vec::new();
    let mut last_seq = 0;
    let print = |rec: &log::Record| serde_json::to_string(rec).unwrap_or_default();
    if let Err(e) = log::read_from(dir, 0, |r| {
        last_seq = r.event.seq;
        last.push(print(&r));
        if last.len() > lines {
            last.remove(0);
        }
    }) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    for l in &last {
        println!("{l}");
    }
    if !follow {
        return ExitCode::SUCCESS;
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let result = log::read_from(dir, last_seq, |r| {
            last_seq = r.event.seq;
            println!("{}", print(&r));
        });
        if let Err(e) = result {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
}
