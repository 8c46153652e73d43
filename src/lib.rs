//! gse_exporter: a Prometheus exporter for the liveness of BlueKing GSE agents.
//!
//! The crate is a library with a thin binary (`src/main.rs`) so that tests and
//! benchmarks drive the same code the binary runs.
#![forbid(unsafe_code)]

pub mod sim;
