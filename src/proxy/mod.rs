//! The data plane: the enforcing reverse proxy.
//!
//! `route` is the pure route table (built from the config, matched per request).

pub mod route;
