//! The integration tests, compiled into one binary: each module below is one
//! theme (linking the whole crate once instead of once per theme is most of the
//! test build's time on two cores). `common` holds the shared helpers: a
//! simulator, an exporter, the binary, TLS material and a Prometheus stack.
//!
//! Run one theme with a filter: `cargo test --test integration exporter::`.

mod common;

mod abuse;
mod assets;
mod cli;
mod deploy;
mod discovery;
mod drift;
mod e2e;
mod examples;
mod exporter;
mod exposition;
mod faults;
mod fuzz;
mod heartbeat;
mod layers;
mod lifecycle;
mod node;
mod otlp;
mod placement;
mod query;
mod reload;
mod secrets;
mod sharding;
mod tenants;
mod topology;
mod translations;
mod upstream_tls;
mod web;
