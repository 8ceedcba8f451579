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
use actgate::policy::context::ContextFacts;
use actgate::policy::{PolicySet, Principal, Query, explain};
use actgate::store::sqlite::SqliteStore;
use actgate::store::{AgentStatus, Store, TokenRecord};
use actgate::telemetry::{LogFormat, init_tracing};
use actgate::token::{KeySet, Tokens, now_unix, rfc3339};

#[derive(Parser)]
#[command(
    name = "actgate",
    version,
    about = "Capability-token gateway for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy, API and admin listeners until SIGTERM or SIGINT.
    Serve {
        /// Config file (default: config/actgate.yaml, else the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
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
    /// Decide one request against the config's policies and explain each policy.
    Check {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
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
        /// Config file.
        #[arg(long)]
        config: PathBuf,
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
        /// Config file (for dataDir).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also check checkpoints exported earlier (`actgate audit checkpoint > cp.json`).
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
    },
    /// Print a signed checkpoint of the log's current head, to keep somewhere else.
    Checkpoint {
        /// Config file (for dataDir).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the last records as JSON lines; with --follow, keep printing new ones.
    Tail {
        /// Config file (for dataDir).
        #[arg(long)]
        config: Option<PathBuf>,
        /// How many records to print first.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Keep printing records as they are written.
        #[arg(short, long)]
        follow: bool,
    },
    /// Rebuild the store's audit index (GET /v1/audit) from the log. Stop the gateway first.
    Reindex {
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a new signing key and make it active; tokens signed by older keys keep
    /// verifying until they expire. A running gateway picks the new key up within 10 s.
    Rotate {
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file: print OK, or every problem with its path.
    Validate {
        /// Config file (default: config/actgate.yaml, else the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_format } => {
            init_tracing(log_format);
            let config = match Config::load_default(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return config_failure(e),
            };
            runtime().block_on(serve(config))
        }
        Command::Demo {
            data_dir,
            keep_running,
        } => {
            init_tracing(LogFormat::Text);
            match runtime().block_on(actgate::demo::run(data_dir, keep_running)) {
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
                    config,
                    agent,
                    ttl,
                    policies,
                },
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(e),
            };
            runtime().block_on(issue_token(config, agent, ttl.map(Into::into), policies))
        }
        Command::Audit { command } => audit_command(command),
        Command::Keys {
            command: KeysCommand::Rotate { config },
        } => {
            let config = match Config::load_default(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return config_failure(e),
            };
            match KeySet::rotate(&config.data_dir.join("keys")) {
                Ok(kid) => {
                    println!("new signing key {kid} is active; older keys still verify");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Validate { config },
        } => match Config::load_default(config.as_deref()) {
            Ok(c) => {
                println!(
                    "OK: {} ({} routes, {} policies, {} upstreams)",
                    c.origin,
                    c.routes.routes().len(),
                    c.policies.len(),
                    c.upstreams.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(e),
        },
        Command::Check {
            config,
            agent,
            action,
            resource,
            context,
        } => check(&config, &agent, &action, &resource, context.as_deref()),
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

fn check(
    config: &std::path::Path,
    agent: &str,
    action: &str,
    resource: &str,
    context: Option<&str>,
) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return config_failure(e),
    };
    let facts = match context.map(serde_json::from_str::<serde_json::Value>) {
        None => ContextFacts::default(),
        Some(Ok(serde_json::Value::Object(map))) => match ContextFacts::from_json(&map) {
            Ok(f) => f,
            Err(msg) => {
                eprintln!("error: --context: {msg}");
                return ExitCode::from(2);
            }
        },
        Some(Ok(_)) => {
            eprintln!("error: --context must be a JSON object, e.g. '{{\"rows\": 10}}'");
            return ExitCode::from(2);
        }
        Some(Err(e)) => {
            eprintln!("error: --context is not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    let tenant = config.tenant.clone();
    let set = match PolicySet::build(config.policies) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let who = Principal {
        tenant: &tenant,
        agent,
        policy_ids: None,
    };
    let query = Query {
        action,
        resource,
        facts: facts.facts(),
    };
    let decision = set.evaluate(&who, &query);
    println!("decision: {}", decision.verdict());
    println!("reason:   {}", decision.reason);
    match decision.policy {
        Some(p) => println!("policy:   {} ({})", p.id, p.name),
        None => println!("policy:   -"),
    }
    println!("message:  {}", decision.message());
    if let Some(p) = decision.policy
        && decision.is_allowed()
        && !p.constraints.is_empty()
    {
        println!(
            "obligations: {}",
            serde_json::to_string(&p.constraints).unwrap_or_default()
        );
    }
    println!();
    println!(
        "policies of tenant {tenant} (checked as agent {agent}; token checks are not part of `check`):"
    );
    let lines = explain(&set, &who, &query);
    if lines.is_empty() {
        println!("  (none)");
    }
    let width = lines.iter().map(|l| l.policy.id.len()).max().unwrap_or(0);
    for line in lines {
        println!(
            "  {:width$}  {:6}  {}  [{}]",
            line.policy.id,
            format!("{:?}", line.policy.effect).to_lowercase(),
            line.why,
            line.policy.name,
        );
    }
    if decision.is_allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn serve(config: Config) -> ExitCode {
    let origin = config.origin.clone();
    let running = match actgate::server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "actgate cannot start");
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(config = %origin, "ready; SIGHUP reloads the config, Ctrl-C or SIGTERM stops");
    wait_for_signal(&running).await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Waits for SIGTERM or SIGINT; SIGHUP asks for a reload and keeps waiting.
async fn wait_for_signal(running: &actgate::server::Running) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
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
    let keys = match KeySet::load_or_create(&config.data_dir.join("keys")) {
        Ok(k) => k,
        Err(e) => return fail(e.to_string()),
    };
    let store = match SqliteStore::open(&config.data_dir) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let from_config = config
        .agents
        .iter()
        .find(|a| a.id == agent && a.tenant == config.tenant)
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

fn audit_command(command: AuditCommand) -> ExitCode {
    use actgate::audit::log;
    let config_path = match &command {
        AuditCommand::Verify { config, .. }
        | AuditCommand::Checkpoint { config }
        | AuditCommand::Tail { config, .. }
        | AuditCommand::Reindex { config } => config.clone(),
    };
    let config = match Config::load_default(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => return config_failure(e),
    };
    let dir = config.data_dir.join("audit");
    let keys_dir = config.data_dir.join("keys");
    match command {
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
            match log::verify(&dir, &|kid| keys.get(kid).cloned(), &extra) {
                Ok(v) => {
                    println!(
                        "OK: {} records in {} segments, hash chain intact, {} checkpoints verified; head seq {} hash {}",
                        v.records, v.segments, v.checkpoints, v.last_seq, v.head
                    );
                    ExitCode::SUCCESS
                }
                Err(broken) => {
                    println!("TAMPERED: {broken}");
                    ExitCode::from(1)
                }
            }
        }
        AuditCommand::Checkpoint { .. } => {
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
        AuditCommand::Reindex { .. } => runtime().block_on(async move {
            let store = match SqliteStore::open(&config.data_dir) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            if let Err(e) = store.clear_audit().await {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
            let mut events = Vec::new();
            if let Err(e) = log::read_from(&dir, 0, |r| events.push(r.event)) {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
            let total = events.len();
            let mut events = events.into_iter();
            loop {
                let chunk: Vec<_> = events.by_ref().take(1000).collect();
                if chunk.is_empty() {
                    break;
                }
                if let Err(e) = store.append_audit(chunk).await {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            }
            println!("reindexed {} audit records from {}", total, dir.display());
            ExitCode::SUCCESS
        }),
    }
}

fn tail(dir: &std::path::Path, lines: usize, follow: bool) -> ExitCode {
    use actgate::audit::log;
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
