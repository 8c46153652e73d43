//! gse_exporter: a Prometheus exporter for the liveness of BlueKing GSE agents.
//!
//! The crate is a library with a thin binary (`src/main.rs`) so that tests and
//! benchmarks drive the same code the binary runs. The modules below are
//! layers: each may use only the ones declared before it (docs/architecture.md;
//! the integration test `layers` checks every `crate::` path).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Items are private by default and the module docs name the private parts
// they own; the docs are meant to be read with `--document-private-items`,
// where those links resolve.
#![allow(rustdoc::private_intra_doc_links)]

// One layer per line, top to bottom (blank lines keep rustfmt from sorting them).
pub mod model;

pub mod procfs;

pub mod outfile;

pub mod config;

pub mod upstream;

pub mod telemetry;

pub mod pacing;

pub mod discovery;

pub mod snapshot;

pub mod poller;

pub mod expose;

pub mod http;

pub mod run;

pub mod demo;

pub mod query;

pub mod node;

pub mod cli;
