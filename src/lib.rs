//! gse_exporter: a Prometheus exporter for the liveness of BlueKing GSE agents.
//!
//! The crate is a library with a thin binary (`src/main.rs`) so that tests and
//! benchmarks drive the same code the binary runs. The modules below are
//! layers: each may use only the ones declared before it (docs/architecture.md;
//! the integration test `layers` checks every `crate::` path).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod expose;
pub mod http;
pub mod model;
pub mod pacing;
pub mod poller;
pub mod query;
pub mod run;
pub mod snapshot;
pub mod telemetry;
pub mod upstream;
