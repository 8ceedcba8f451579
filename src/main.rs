//! The `actgate` command line: parse arguments, load the config, run. Exit codes: 0 success
//! (or allowed), 1 denied / check failed, 2 usage or config error.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use actgate::config::{Config, ConfigError};
use actgate::policy::context::ContextFacts;
use actgate::policy::{PolicySet, Principal, Query, explain};

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
enum ConfigCommand {
    /// Validate a config file: print OK, or every problem with its path.
    Validate {
        /// Config file (default: config/actgate.yaml, else the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
