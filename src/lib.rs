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
//! - [`proxy`]: the data plane; [`proxy::route`] is the route table.
//! - [`error`]: validation problems shared by every boundary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod policy;
pub mod proxy;
