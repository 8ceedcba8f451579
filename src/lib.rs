//! actgate: a self-hosted gateway that gives AI agents fine-grained, revocable, audited
//! permissions.
//!
//! # Architecture
//!
//! ```text
//! request ─► listener ─► route match ─► token (cache → verify) ─► decide (snapshot)
//!         ─► constraints (query/body) ─► audit + metrics ─► forward ─► response
//! ```
//!
//! The decision core ([`policy`]) is a pure function of a compiled policy set, the token's
//! principal and the request. Everything with I/O sits around it.
//!
//! # Layout
//!
//! - [`config`]: YAML → raw types → one validation pass reporting every problem with its
//!   path → the compiled [`config::Config`].
//! - [`policy`]: the decision core — policy model and validation, resource globs, the strict
//!   e-mail address parser, the compiled index, `explain` and the reference evaluator.
//! - [`token`]: PASETO v4.public tokens — issue, verify, the key set and its rotation, the
//!   bounded verified-token cache.
//! - [`snapshot`]: the compiled, versioned state a decision reads (policies, routes, agents,
//!   revocations) and `Snapshot::decide`, the whole of DESIGN.md §2.
//! - [`store`]: the store trait and its embedded SQLite implementation.
//! - [`gateway`]: the shared state (config, store, tokens, audit, metrics, snapshot) and how
//!   it changes; `Gateway::authorize` is the one decision path of proxy and API.
//! - [`api`]: the ACT REST API (axum): API-key auth and roles, agents, policies, tokens,
//!   enforce, audit, API keys.
//! - [`apikey`]: API keys — generation, strength rules, the config's keys resolved.
//! - [`dataplane`]: the proxy listener: the target stage, the request log and the audit rule
//!   shared by the two gateways behind it, and the dispatch between them.
//! - [`proxy`]: routes — the reverse proxy in front of internal APIs; [`proxy::route`] is the
//!   route table.
//! - [`mcp`]: MCP endpoints — JSON-RPC reading, tool mapping, list filtering, sessions,
//!   stdio servers.
//! - [`audit`]: audit events, the bounded queue and the writer.
//! - [`telemetry`]: Prometheus metrics (one injected `Metrics`) and tracing setup.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`server`]: binds the listeners, serves, reloads, drains on shutdown.
//! - [`listener`]: accept, connection limit, TLS handshake, HTTP/1.1 + HTTP/2 with limits,
//!   graceful drain; shared by the proxy and the API.
//! - [`client`]: a minimal JSON client for the command line's calls to a running gateway.
//! - [`demo`]: `actgate demo`, the product in one command with built-in demo upstreams.
//! - [`tls`]: rustls configs for listeners and upstreams, certificate reload, client
//!   identities for sender-constrained tokens.
//! - [`json`]: strict JSON parsing (duplicate keys and deep nesting refused).
//! - [`ids`]: random identifiers.
//! - [`error`]: validation problems shared by every boundary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod apikey;
pub mod audit;
pub mod client;
pub mod config;
pub mod dataplane;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod ids;
pub mod json;
pub mod listener;
pub mod mcp;
pub mod policy;
pub mod proxy;
pub mod replicas;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod token;
