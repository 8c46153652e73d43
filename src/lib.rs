//! gse_exporter: a Prometheus exporter for the liveness of BlueKing GSE agents.
//!
//! The crate is a library with a thin binary (`src/main.rs`) so that tests and
//! benchmarks drive the same code the binary runs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent_text;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cmdb;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod exposition;
pub mod gse;
pub mod metrics;
pub mod node;
pub mod otlp;
pub mod pacing;
pub mod poller;
pub mod query;
pub mod server;
pub mod state;
pub mod web_config;
